package compile

import (
	"fmt"
	"math/rand"
	"os"
	"slices"
	"sort"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

var testSegs = []string{"s0", "s1", "s2"}

// editPolicy changes one thing of a copy of p, as a user editing one
// policy document does; it says what.
func (g gen) editPolicy(p *policy.Policy) (*policy.Policy, string) {
	c := snapshotOf(p).p
	d := policy.Direction(g.r.Intn(2))
	rules := func() *[]policy.Rule {
		if d == policy.Egress {
			return &c.Egress
		}
		return &c.Ingress
	}()
	pick := func() *policy.Rule {
		if len(*rules) == 0 {
			return nil
		}
		return &(*rules)[g.r.Intn(len(*rules))]
	}
	switch g.r.Intn(10) {
	case 0:
		if r := pick(); r != nil {
			r.Services = []policy.Service{g.service()}
			return c, "rule service"
		}
		fallthrough
	case 1:
		*rules = append(*rules, g.rules(testSegs, c.Name+"x", d)...)
		return c, "rules added"
	case 2:
		if n := len(*rules); n > 0 {
			i := g.r.Intn(n)
			*rules = append((*rules)[:i:i], (*rules)[i+1:]...)
			return c, "rule removed"
		}
		return c, "nothing"
	case 3:
		if r := pick(); r != nil {
			r.Peers = []policy.Peer{g.peer(testSegs)}
			return c, "rule peer"
		}
		return c, "nothing"
	case 4:
		if r := pick(); r != nil {
			r.Action = []policy.Action{policy.Allow, policy.Deny, policy.Reject, policy.Pass, policy.Escalate}[g.r.Intn(5)]
			return c, "rule action"
		}
		return c, "nothing"
	case 5:
		c.Subject = policy.Subject{}
		if g.r.Intn(4) == 0 {
			c.Subject.Segment = testSegs[g.r.Intn(len(testSegs))]
		} else {
			c.Subject.Namespaces, c.Subject.Workloads = g.nsMatch(), g.selector()
		}
		return c, "subject"
	case 6:
		c.Tier = policy.Tier(g.r.Intn(5))
		return c, "tier"
	case 7:
		c.Priority = g.r.Intn(3)
		return c, "priority"
	case 8:
		if r := pick(); r != nil && g.r.Intn(2) == 0 {
			r.Log = !r.Log
			return c, "rule log"
		}
		if c.Mode == policy.Observe {
			c.Mode = policy.Enforce
		} else {
			c.Mode = policy.Observe
		}
		return c, "mode"
	}
	c.Isolate[d] = !c.Isolate[d]
	return c, "isolation"
}

// editSet changes the policy objects of set (new objects for what
// changes, or now and then in place, as some callers do) and says what.
func (g gen) editSet(set *policy.Set, step int) string {
	pols := append([]*policy.Policy(nil), set.Policies...)
	defer func() { set.Policies = pols }()
	switch k := g.r.Intn(20); {
	case k < 10 && len(pols) > 0:
		i := g.r.Intn(len(pols))
		var what string
		pols[i], what = g.editPolicy(pols[i])
		return "policy " + pols[i].Name + ": " + what
	case k < 13:
		p := g.policy(100+step, testSegs)
		at := g.r.Intn(len(pols) + 1)
		pols = append(pols[:at:at], append([]*policy.Policy{p}, pols[at:]...)...)
		return "policy added"
	case k < 16 && len(pols) > 0:
		i := g.r.Intn(len(pols))
		pols = append(pols[:i:i], pols[i+1:]...)
		return "policy removed"
	case k < 18 && len(pols) > 0:
		// In place, as the nft tests do: the compiler must not rely on
		// the objects it was given staying as they were.
		p := pols[g.r.Intn(len(pols))]
		for j := range p.Ingress {
			for s := range p.Ingress[j].Services {
				p.Ingress[j].Services[s].Port++
			}
		}
		p.Priority = g.r.Intn(3)
		return "policy edited in place"
	case k == 18:
		nss := append([]*policy.Namespace(nil), set.Namespaces...)
		i := g.r.Intn(len(nss))
		nss[i] = &policy.Namespace{Name: nss[i].Name, Labels: map[string]string{"env": g.pick("prod", "dev")}}
		set.Namespaces = nss
		return "namespace labels"
	}
	segs := append([]*policy.Segment(nil), set.Segments...)
	i := g.r.Intn(len(segs))
	segs[i] = &policy.Segment{Name: segs[i].Name, Namespaces: g.nsMatch(), Workloads: g.selector()}
	set.Segments = segs
	return "segment"
}

// checkFresh requires st to equal a fresh compile of set numbered after
// st: the same keys must get the same numbers, so any difference in any
// table, identity, rule or outcome, or in the numbers held, is a bug.
func checkFresh(t *testing.T, set *policy.Set, host string, st *State) {
	t.Helper()
	fresh, err := Compile(set, host, st)
	if err != nil {
		t.Fatalf("fresh compile: %v", err)
	}
	if d := Diff(st, fresh); !d.Empty() {
		t.Fatalf("a fresh compile differs from the incremental one: addrs %d identities %d tables %d/%d guards %d ranges %v outcomes %d rules %v",
			len(d.Addrs), len(d.Identities), len(d.Tables[0]), len(d.Tables[1]), len(d.Guards), d.Ranges != nil, len(d.Outcomes), d.Rules != nil)
	}
	var a, b []string
	st.alloc.ids.each(func(k string, _ uint32) { a = append(a, k) })
	fresh.alloc.ids.each(func(k string, _ uint32) { b = append(b, k) })
	sort.Strings(a)
	sort.Strings(b)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("numbered keys differ:\n incremental %q\n       fresh %q", a, b)
	}
}

// TestPolicyEditsMatchFresh interleaves random policy edits (through
// SetPolicies) with workload changes (through UpsertWorkload and
// DeleteWorkload, or through SetPolicies) and checks every state against
// a fresh compile and the reference evaluator, and the Deltas replayed.
func TestPolicyEditsMatchFresh(t *testing.T) {
	seeds, steps := int64(60), 25
	if os.Getenv("BULKHEAD_LONG") != "" {
		seeds, steps = 1000, 60
	}
	edits, full := 0, 0
	for seed := int64(1); seed <= seeds; seed++ {
		g := gen{rand.New(rand.NewSource(seed))}
		set := g.set(6+g.r.Intn(10), 1+g.r.Intn(10))
		host := ""
		if seed%3 == 0 {
			host = "h1"
		}
		c, err := New(set, host, nil)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		first := c.State()
		firstStats := first.Stats()
		replay := newReplay(first)
		prev := first
		hist := []*State{first}
		for step := 0; step < steps; step++ {
			var what string
			switch k := g.r.Intn(10); {
			case k < 6:
				what = g.editSet(set, step)
				before := c.fullCompiles
				if err := c.SetPolicies(set); err != nil {
					t.Fatalf("seed %d step %d (%s): %v", seed, step, what, err)
				}
				edits++
				full += c.fullCompiles - before
			case k < 9:
				mutate(t, g, c, set, step)
				what = "workload"
			default:
				// A workload replaced in the set, then SetPolicies.
				i := g.r.Intn(len(set.Workloads))
				w := *set.Workloads[i]
				w.Labels = g.labels()
				set.Workloads = append(set.Workloads[:i:i], append([]*policy.Workload{&w}, set.Workloads[i+1:]...)...)
				if err := c.SetPolicies(set); err != nil {
					t.Fatal(err)
				}
				what = "workload through SetPolicies"
			}
			st := c.State()
			replay.apply(Diff(prev, st))
			prev = st
			old := hist[g.r.Intn(len(hist))]
			hist = append(hist, st)
			checkRuleChanges(t, old, st)
			checkRuleChanges(t, st, old)
			t.Run(fmt.Sprintf("%d/%d", seed, step), func(t *testing.T) {
				t.Logf("host %q, %s", host, what)
				checkFresh(t, set, host, st)
				if host == "" {
					checkAgainstEngine(t, g, set, st, 40)
				}
			})
		}
		if d := Diff(replay.state(), prev); !d.Empty() {
			t.Fatalf("seed %d: replayed deltas differ from the last state by %d changes", seed, d.Len())
		}
		if first.Stats() != firstStats {
			t.Fatalf("seed %d: later updates changed an earlier State", seed)
		}
	}
	t.Logf("%d policy edits, %d of them compiled in full", edits, full)
	if full*2 > edits {
		t.Errorf("%d of %d policy edits compiled in full; want most incremental", full, edits)
	}
}

// TestPolicyEditKinds makes each kind of single-policy edit to a fixed
// set and requires it to be made incrementally and to equal a fresh
// compile.
func TestPolicyEditKinds(t *testing.T) {
	base := func() *policy.Set {
		s := smallSet()
		for _, w := range s.Workloads {
			w.Ports = []policy.NamedPort{{Name: "http", Protocol: policy.TCP, Port: 8080}}
		}
		db := s.Policies[0]
		db.Ingress = append(db.Ingress, policy.Rule{ID: "http", Action: policy.Allow, Peers: []policy.Peer{{Segment: "frontends"}},
			Services: []policy.Service{{Protocol: policy.TCP, Name: "http"}}})
		s.Policies = append(s.Policies, &policy.Policy{Name: "web", Kind: "Policy", Tier: policy.Application, Mode: policy.Enforce,
			Subject: policy.Subject{Workloads: &policy.Selector{MatchLabels: map[string]string{"app": "web"}}},
			Isolate: [2]bool{true, true},
			Ingress: []policy.Rule{{ID: "from-db", Action: policy.Allow, Peers: []policy.Peer{{Segment: "databases"}},
				Services: []policy.Service{{Protocol: policy.TCP, Name: "http"}}}},
			Egress: []policy.Rule{{ID: "to-db", Action: policy.Allow, Peers: []policy.Peer{{Segment: "databases"}},
				Services: []policy.Service{{Protocol: policy.TCP, Port: 5432}}}}})
		return s
	}
	web := func(s *policy.Set) *policy.Policy { return s.Policies[1] }
	for _, c := range []struct {
		name string
		edit func(p *policy.Policy)
	}{
		{"named port to number", func(p *policy.Policy) { p.Ingress[0].Services = []policy.Service{{Protocol: policy.TCP, Port: 5432}} }},
		{"port", func(p *policy.Policy) { p.Egress[0].Services[0].Port = 5433 }},
		{"log", func(p *policy.Policy) { p.Egress[0].Log = true }},
		{"action", func(p *policy.Policy) { p.Ingress[0].Action = policy.Deny }},
		{"tier", func(p *policy.Policy) { p.Tier = policy.Emergency }},
		{"priority", func(p *policy.Policy) { p.Priority = -1 }},
		{"isolation", func(p *policy.Policy) { p.Isolate[policy.Egress] = false; p.Egress = nil }},
		{"observe", func(p *policy.Policy) { p.Mode = policy.Observe }},
		{"subject", func(p *policy.Policy) { p.Subject.Workloads.MatchLabels["app"] = "db" }},
		{"peer", func(p *policy.Policy) { p.Egress[0].Peers = []policy.Peer{{Segment: "frontends"}} }},
		{"new peer", func(p *policy.Policy) {
			p.Egress[0].Peers = []policy.Peer{{Workloads: &policy.Selector{MatchLabels: map[string]string{"app": "db"}}}}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			set := base()
			comp, err := New(set, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			c.edit(web(set)) // in place
			if err := comp.SetPolicies(set); err != nil {
				t.Fatal(err)
			}
			if comp.fullCompiles != 0 {
				t.Errorf("compiled in full")
			}
			st := comp.State()
			checkFresh(t, set, "", st)
			checkAgainstEngine(t, gen{rand.New(rand.NewSource(1))}, set, st, 300)
		})
	}
}

// checkRuleChanges requires Diff's rule changes from a to b to be those a
// comparison of every slot finds.
func checkRuleChanges(t *testing.T, a, b *State) {
	t.Helper()
	var want []Change[RuleNum, policy.RuleRef]
	for n := 1; n < max(len(a.Rules), len(b.Rules)); n++ {
		var x, y policy.RuleRef
		if n < len(a.Rules) {
			x = a.Rules[n]
		}
		if n < len(b.Rules) {
			y = b.Rules[n]
		}
		switch {
		case x == y:
		case x == (policy.RuleRef{}):
			want = append(want, Change[RuleNum, policy.RuleRef]{Op: Add, Key: RuleNum(n), New: y})
		case y == (policy.RuleRef{}):
			want = append(want, Change[RuleNum, policy.RuleRef]{Op: Delete, Key: RuleNum(n), Old: x})
		default:
			want = append(want, Change[RuleNum, policy.RuleRef]{Op: Update, Key: RuleNum(n), Old: x, New: y})
		}
	}
	if got := Diff(a, b).RuleChanges; !slices.Equal(got, want) {
		t.Fatalf("rule changes: got %v, want %v", got, want)
	}
}
