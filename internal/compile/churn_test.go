package compile

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// churnSet is one of the two policy sets of issue 8's churn: three
// workloads, a policy whose ports differ, and n extra /32 ipBlock rules.
func churnSet(ws []*policy.Workload, variant int) *policy.Set {
	n, port := 10, 8080
	if variant == 1 {
		n, port = 50, 8081
	}
	a := map[string]string{"app": "a"}
	b := map[string]string{"app": "b"}
	in := []policy.Rule{
		{ID: "app/b-in/web", Action: policy.Allow, Peers: []policy.Peer{{Workloads: &policy.Selector{MatchLabels: a}}},
			Services: []policy.Service{{Protocol: policy.TCP, Port: 9000}, {Protocol: policy.TCP, Port: port}}},
	}
	for i := range n {
		in = append(in, policy.Rule{ID: "app/b-in/block-" + strconv.Itoa(i), Action: policy.Allow,
			Peers:    []policy.Peer{{CIDRs: []policy.CIDR{{Prefix: netip.MustParsePrefix(fmt.Sprintf("192.0.%d.%d/32", i/200, i%200+1))}}}},
			Services: []policy.Service{{Protocol: policy.TCP, Port: 443 + variant}}})
	}
	return &policy.Set{
		Namespaces: []*policy.Namespace{{Name: "app"}},
		Workloads:  ws,
		Policies: []*policy.Policy{{
			Name: "b-in", Namespace: "app", Kind: "Policy", Tier: policy.Application, Mode: policy.Enforce,
			Subject: policy.Subject{Workloads: &policy.Selector{MatchLabels: b}},
			Isolate: [2]bool{true, false}, Ingress: in,
		}, {
			Name: "a-out", Namespace: "app", Kind: "Policy", Tier: policy.Application, Mode: policy.Enforce,
			Subject: policy.Subject{Workloads: &policy.Selector{MatchLabels: a}},
			Isolate: [2]bool{false, true},
			Egress: []policy.Rule{{ID: "app/a-out/to-b", Action: policy.Allow,
				Peers:    []policy.Peer{{Workloads: &policy.Selector{MatchLabels: b}}},
				Services: []policy.Service{{Protocol: policy.TCP, Port: 9000 + variant}, {Protocol: policy.TCP, Port: 9000}}}},
		}},
	}
}

func churnWorkloads() []*policy.Workload {
	return []*policy.Workload{
		wl("app", "a", "10.0.0.1", map[string]string{"app": "a"}),
		wl("app", "b", "10.0.0.2", map[string]string{"app": "b"}),
		wl("app", "c", "10.0.0.3", map[string]string{"app": "c"}),
	}
}

// numbering is what a State's numbering holds: the next number of every
// kind, the numbers held, the outcome and rule tables' lengths.
type numbering struct {
	next            [numKinds]uint32
	held            int
	outcomes, rules int
}

func numberingOf(s *State) numbering {
	return numbering{next: s.alloc.next, held: s.alloc.ids.len(), outcomes: len(s.Outcomes), rules: len(s.Rules)}
}

// Alternating two policy sets (issue 8: they differ in ports and in the
// number of /32 ipBlock rules, so every switch is a full compile) leaves
// the numbering flat: numbers no rule uses any more are reused, and after
// the first pair of switches every pair ends where the one before did,
// with the same numbers (so the dataplane's delta from A to A is empty).
func TestChurnKeepsNumberingFlat(t *testing.T) {
	pairs := 50
	if os.Getenv("BULKHEAD_SOAK") != "" {
		pairs = 2000
	}
	ws := churnWorkloads()
	c, err := New(churnSet(ws, 0), "h1", nil)
	if err != nil {
		t.Fatal(err)
	}
	var first numbering
	var firstA *State
	for i := range pairs {
		for v := range 2 {
			if err := c.SetPolicies(churnSet(ws, 1-v)); err != nil {
				t.Fatalf("pair %d: %v", i, err)
			}
			c.State()
		}
		s := c.State()
		got := numberingOf(s)
		switch {
		case i == 1:
			first, firstA = got, s
		case i > 1 && got != first:
			t.Fatalf("pair %d: numbering %+v, after the second pair %+v: it grows", i, got, first)
		}
		if i > 1 {
			if d := Diff(firstA, s); !d.Empty() {
				t.Fatalf("pair %d: the same policy set again differs from its earlier State: %d changes", i, d.Len())
			}
		}
	}
	if c.fullCompiles < pairs {
		t.Errorf("%d full compiles in %d pairs: the sets should differ in their CIDRs", c.fullCompiles, pairs)
	}
}

// The same through incremental SetPolicies: two versions of a policy
// that name the same CIDRs but different ports and rules.
func TestIncrementalChurnKeepsNumberingFlat(t *testing.T) {
	ws := churnWorkloads()
	mk := func(v int) *policy.Set {
		s := churnSet(ws, 0)
		p := s.Policies[0]
		if v == 1 {
			p.Ingress = append(p.Ingress[:1:1], policy.Rule{ID: "app/b-in/extra", Action: policy.Deny,
				Peers: []policy.Peer{{Workloads: &policy.Selector{MatchLabels: map[string]string{"app": "c"}}}}})
			p.Ingress = append(p.Ingress, churnSet(ws, 0).Policies[0].Ingress[1:]...)
			p.Ingress[0].Services = []policy.Service{{Protocol: policy.TCP, Port: 7000}}
		}
		return s
	}
	c, err := New(mk(0), "h1", nil)
	if err != nil {
		t.Fatal(err)
	}
	full := c.fullCompiles
	var first numbering
	for i := range 50 {
		for v := range 2 {
			if err := c.SetPolicies(mk(1 - v)); err != nil {
				t.Fatal(err)
			}
			c.State()
		}
		if got := numberingOf(c.State()); i == 1 {
			first = got
		} else if i > 1 && got != first {
			t.Fatalf("pair %d: numbering %+v, after the second pair %+v: it grows", i, got, first)
		}
	}
	if c.fullCompiles != full {
		t.Errorf("%d full compiles: the change was meant to be incremental", c.fullCompiles-full)
	}
}

// SafeSwitch holds from every State to its next and back, and not across
// a State that freed numbers a later one takes again.
func TestSafeSwitch(t *testing.T) {
	ws := churnWorkloads()
	c, err := New(churnSet(ws, 0), "h1", nil)
	if err != nil {
		t.Fatal(err)
	}
	var states []*State
	states = append(states, c.State())
	for i := range 4 {
		if err := c.SetPolicies(churnSet(ws, 1-i%2)); err != nil {
			t.Fatal(err)
		}
		states = append(states, c.State())
	}
	for i := 1; i < len(states); i++ {
		if !SafeSwitch(states[i-1], states[i]) || !SafeSwitch(states[i], states[i-1]) {
			t.Errorf("State %d and %d: not safe", i-1, i)
		}
	}
	if SafeSwitch(states[1], states[3]) {
		t.Errorf("States 1 and 3: safe, though 3 reuses numbers 2 freed")
	}
	other, _ := New(churnSet(ws, 0), "h1", states[0])
	if SafeSwitch(states[1], other.State()) {
		t.Errorf("two branches from one State: safe")
	}
}

// Every kind of key is told by its prefix, as the callers of number
// write them.
func TestKindOf(t *testing.T) {
	for key, want := range map[string]allocKind{"i:w\x00app": kindIdentity, "c:ingress0:1,|": kindClass,
		"g:egress:x": kindGroup, "u:0,1": kindGuard, "p:w:|": kindPeer, ruleKey("Policy/a/b", policy.Ingress, 3): kindRule} {
		if got := kindOf(key); got != want {
			t.Errorf("kindOf(%q) = %d, want %d", key, got, want)
		}
	}
}
