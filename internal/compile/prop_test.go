package compile

import (
	"fmt"
	"math/rand"
	"net/netip"
	"slices"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func byAddr(s *policy.Set) map[netip.Addr]*policy.Workload {
	m := map[netip.Addr]*policy.Workload{}
	for _, w := range s.Workloads {
		for _, a := range w.IPs {
			m[a.Unmap()] = w
		}
	}
	return m
}

func refString(r *policy.RuleRef) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%s/%s/%d/%s/%s", r.Policy, r.Direction, r.Index, r.ID, r.Action)
}

// sideString is what the dataplane must reproduce of a side.
func sideString(s policy.Side) string {
	return fmt.Sprintf("%s rule=%s would=%s", s.Action, refString(s.Rule), refString(s.WouldDeny))
}

func verdictString(v policy.Verdict) string {
	out := fmt.Sprintf("%s | egress %s | ingress %s", v.Action, sideString(v.Egress), sideString(v.Ingress))
	if v.Wall != nil {
		out += " wall=" + v.Wall.Name
	}
	if v.ConflictClass != nil {
		out += " cc=" + v.ConflictClass.Name
	}
	return out
}

func probeString(p policy.Probe) string {
	return fmt.Sprintf("%s -> %s %s/%d", p.From, p.To, p.Protocol, p.Port)
}

// checkAgainstEngine compares Lookup on st with the reference evaluator on
// n random probes.
func checkAgainstEngine(t *testing.T, g gen, set *policy.Set, st *State, n int) {
	t.Helper()
	eng, err := policy.NewEngine(set)
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	addrs := byAddr(set)
	for i := 0; i < n; i++ {
		p := g.probe(set, addrs)
		want, got := verdictString(eng.Evaluate(p)), verdictString(Lookup(st, p))
		if want != got {
			t.Fatalf("probe %s\n want %s\n  got %s", probeString(p), want, got)
		}
	}
}

func TestLookupMatchesEngine(t *testing.T) {
	for seed := int64(1); seed <= 300; seed++ {
		g := gen{rand.New(rand.NewSource(seed))}
		set := g.set(4+g.r.Intn(12), 1+g.r.Intn(8))
		st, err := Compile(set, "", nil)
		if err != nil {
			t.Fatalf("seed %d: compile: %v", seed, err)
		}
		t.Run(fmt.Sprint(seed), func(t *testing.T) { checkAgainstEngine(t, g, set, st, 300) })
	}
}

// TestIncrementalMatchesEngine changes workloads one at a time through a
// Compiler and checks every intermediate state, and that the Deltas
// replayed on the first state give the last.
func TestIncrementalMatchesEngine(t *testing.T) {
	for seed := int64(1); seed <= 100; seed++ {
		g := gen{rand.New(rand.NewSource(seed))}
		set := g.set(6+g.r.Intn(10), 1+g.r.Intn(8))
		c, err := New(set, "", nil)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		first := c.State()
		firstStats := first.Stats()
		replay := newReplay(first)
		prev := first
		for step := 0; step < 15; step++ {
			mutate(t, g, c, set, step)
			st := c.State()
			replay.apply(Diff(prev, st))
			prev = st
			t.Run(fmt.Sprintf("%d/%d", seed, step), func(t *testing.T) { checkAgainstEngine(t, g, set, st, 60) })
		}
		if d := Diff(replay.state(), prev); !d.Empty() {
			t.Fatalf("seed %d: replayed deltas differ from the last state by %d changes", seed, d.Len())
		}
		if first.Stats() != firstStats {
			t.Fatalf("seed %d: later updates changed an earlier State", seed)
		}
		fresh, err := Compile(set, "", prev)
		if err != nil {
			t.Fatal(err)
		}
		if d := Diff(prev, fresh); len(d.Identities)+len(d.Tables[0])+len(d.Tables[1])+len(d.Addrs) != 0 {
			t.Errorf("seed %d: a fresh compile differs from the incremental one by %d changes", seed, d.Len())
		}
	}
}

// mutate changes set and c alike: a relabel, a delete or an add.
func mutate(t *testing.T, g gen, c *Compiler, set *policy.Set, step int) {
	i := g.r.Intn(len(set.Workloads))
	k := g.r.Intn(4)
	if k == 0 && len(set.Workloads) == 1 {
		k = 1 // keep one: probes need a workload
	}
	switch k {
	case 0:
		c.DeleteWorkload(set.Workloads[i].Key())
		set.Workloads = append(set.Workloads[:i:i], set.Workloads[i+1:]...)
		return
	case 1:
		w := g.workload(100 + step)
		w.Name = fmt.Sprintf("new%d", step)
		set.Workloads = append(set.Workloads, w)
		if err := c.UpsertWorkload(w); err != nil {
			t.Fatal(err)
		}
		return
	}
	w := *set.Workloads[i]
	w.Labels = g.labels()
	if g.r.Intn(2) == 0 {
		w.Ports = g.workload(0).Ports
	}
	set.Workloads = append(set.Workloads[:i:i], append([]*policy.Workload{&w}, set.Workloads[i+1:]...)...)
	if err := c.UpsertWorkload(&w); err != nil {
		t.Fatal(err)
	}
}

// replay applies Deltas to plain maps, as an agent would to the kernel.
type replay struct {
	base *State
	s    *State
}

func newReplay(s *State) *replay {
	cp := &State{Addrs: newSmap[netip.Addr, IdentityID](), Identities: newSmap[IdentityID, IdentityAttrs](),
		Guards: newSmap[[2]GuardID, Guard](), Ranges: s.Ranges, Outcomes: []Outcome{{}}, Rules: []policy.RuleRef{{}}}
	cp.Tables[0], cp.Tables[1] = newSmap[TableKey, PortMap](), newSmap[TableKey, PortMap]()
	r := &replay{s: cp}
	r.apply(Diff(nil, s))
	return r
}

func applyChanges[K comparable, V any](m *smap[K, V], cs []Change[K, V]) {
	for _, c := range cs {
		if c.Op == Delete {
			m.del(c.Key)
		} else {
			m.set(c.Key, c.New)
		}
	}
}

func (r *replay) apply(d Delta) {
	applyChanges(r.s.Addrs, d.Addrs)
	applyChanges(r.s.Identities, d.Identities)
	applyChanges(r.s.Tables[0], d.Tables[0])
	applyChanges(r.s.Tables[1], d.Tables[1])
	applyChanges(r.s.Guards, d.Guards)
	if d.Ranges != nil {
		r.s.Ranges = d.Ranges
	}
	outs := slices.Clone(r.s.Outcomes)
	for _, c := range d.Outcomes {
		for int(c.Key) >= len(outs) {
			outs = append(outs, Outcome{})
		}
		outs[c.Key] = c.New // zero for a Delete
	}
	r.s.Outcomes = outs
	// The rule table from its changes alone, as the kernel keeps it.
	rules := slices.Clone(r.s.Rules)
	for _, c := range d.RuleChanges {
		for int(c.Key) >= len(rules) {
			rules = append(rules, policy.RuleRef{})
		}
		rules[c.Key] = c.New // zero for a Delete
	}
	for len(rules) > 1 && rules[len(rules)-1] == (policy.RuleRef{}) {
		rules = rules[:len(rules)-1]
	}
	r.s.Rules = rules
}

func (r *replay) state() *State { return r.s }
