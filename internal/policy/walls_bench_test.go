package policy

import (
	"fmt"
	"testing"
)

// scaleSet is the manager's measured case: n policies of rules ingress
// rules each in 50 namespaces, a baseline that denies everything, two
// segments and (with wall) a wall between them that holds.
func scaleSet(n, rules int, wall bool) *Set {
	s := &Set{}
	for _, name := range []string{"left", "right"} {
		s.Segments = append(s.Segments, &Segment{Name: name, Namespaces: NamespaceMatch{Names: []string{name}}, Workloads: &Selector{}})
	}
	if wall {
		s.Walls = []*Wall{{Name: "left-right", Segments: []string{"left", "right"}}}
	}
	s.Policies = append(s.Policies, &Policy{Name: "default-deny", Kind: "Policy", Tier: Baseline, Mode: Enforce,
		Subject: Subject{Workloads: &Selector{}},
		Ingress: []Rule{{ID: "deny-in", Action: Deny}}, Egress: []Rule{{ID: "deny-out", Action: Deny}}})
	for i := range n {
		ns := fmt.Sprintf("app%d", i%50)
		p := &Policy{Name: fmt.Sprintf("p%d", i), Namespace: ns, Kind: "Policy", Tier: Application, Mode: Enforce,
			Subject: Subject{Workloads: &Selector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", i)}}}}
		for r := range rules {
			p.Ingress = append(p.Ingress, Rule{ID: fmt.Sprintf("p%d/r%d", i, r), Action: Allow,
				Peers:    []Peer{{Namespaces: NamespaceMatch{Names: []string{ns}}, Workloads: &Selector{MatchLabels: map[string]string{"app": fmt.Sprintf("c%d", r)}}}},
				Services: []Service{{Protocol: TCP, Port: 1000 + r}}})
		}
		s.Policies = append(s.Policies, p)
	}
	return s
}

func BenchmarkProveWalls(b *testing.B) {
	for _, n := range []int{100, 1000} {
		set := scaleSet(n, 10, true)
		b.Run(fmt.Sprintf("policies=%d", n), func(b *testing.B) {
			for b.Loop() {
				if br, err := ProveWalls(set); err != nil || len(br) != 0 {
					b.Fatalf("ProveWalls: %v, %d breaches, want none", err, len(br))
				}
			}
		})
	}
}
