package compile

import (
	"maps"
	"slices"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// The compiler keeps deep copies of the policy objects it compiled, so
// that SetPolicies can tell what changed even when a caller edited an
// object in place, and compares them field by field: reflect.DeepEqual
// costs too much at 10,000 policies per change. equal_test.go checks
// that every field of every type is compared.

func cloneSelector(s *policy.Selector) *policy.Selector {
	if s == nil {
		return nil
	}
	c := &policy.Selector{MatchLabels: maps.Clone(s.MatchLabels), MatchExpressions: slices.Clone(s.MatchExpressions)}
	for i := range c.MatchExpressions {
		c.MatchExpressions[i].Values = slices.Clone(c.MatchExpressions[i].Values)
	}
	return c
}

// selectorEqual compares a (a copy) with b. When labels is not nil it
// holds a's labels, sorted, at its front (see snapshot), and they are
// looked up in b rather than walked, which costs less; it is advanced.
func selectorEqual(a, b *policy.Selector, labels *[]string) bool {
	if a == nil || b == nil {
		return a == b
	}
	n := len(a.MatchLabels)
	if n != len(b.MatchLabels) || len(a.MatchExpressions) != len(b.MatchExpressions) {
		return false
	}
	if labels != nil {
		l := *labels
		for i := 0; i < 2*n; i += 2 {
			if v, ok := b.MatchLabels[l[i]]; !ok || v != l[i+1] {
				return false
			}
		}
		*labels = l[2*n:]
	} else {
		for k, v := range a.MatchLabels {
			if w, ok := b.MatchLabels[k]; !ok || w != v {
				return false
			}
		}
	}
	for i := range a.MatchExpressions {
		x, y := &a.MatchExpressions[i], &b.MatchExpressions[i]
		if x.Key != y.Key || x.Operator != y.Operator || !slices.Equal(x.Values, y.Values) {
			return false
		}
	}
	return true
}

// appendLabels appends s's labels, sorted by key, as key, value pairs.
func appendLabels(out []string, s *policy.Selector) []string {
	if s == nil {
		return out
	}
	for _, k := range slices.Sorted(maps.Keys(s.MatchLabels)) {
		out = append(out, k, s.MatchLabels[k])
	}
	return out
}

func cloneNSMatch(m policy.NamespaceMatch) policy.NamespaceMatch {
	return policy.NamespaceMatch{Names: slices.Clone(m.Names), Selector: cloneSelector(m.Selector)}
}

func nsMatchEqual(a, b policy.NamespaceMatch, labels *[]string) bool {
	return slices.Equal(a.Names, b.Names) && selectorEqual(a.Selector, b.Selector, labels)
}

func cloneCIDRs(cs []policy.CIDR) []policy.CIDR {
	out := slices.Clone(cs)
	for i := range out {
		out[i].Except = slices.Clone(out[i].Except)
	}
	return out
}

func cidrsEqual(a, b []policy.CIDR) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Prefix != b[i].Prefix || !slices.Equal(a[i].Except, b[i].Except) {
			return false
		}
	}
	return true
}

func intpEqual(a, b *int) bool { return a == b || (a != nil && b != nil && *a == *b) }

func cloneIntp(p *int) *int {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func cloneRules(rs []policy.Rule) []policy.Rule {
	out := slices.Clone(rs)
	for i := range out {
		r := &out[i]
		r.Peers = slices.Clone(r.Peers)
		for j := range r.Peers {
			p := &r.Peers[j]
			p.CIDRs, p.Namespaces, p.Workloads = cloneCIDRs(p.CIDRs), cloneNSMatch(p.Namespaces), cloneSelector(p.Workloads)
		}
		r.Services = slices.Clone(r.Services)
		for j := range r.Services {
			s := &r.Services[j]
			s.Type, s.Code = cloneIntp(s.Type), cloneIntp(s.Code)
		}
	}
	return out
}

func peerEqual(a, b *policy.Peer, labels *[]string) bool {
	return a.Any == b.Any && a.Segment == b.Segment && cidrsEqual(a.CIDRs, b.CIDRs) &&
		nsMatchEqual(a.Namespaces, b.Namespaces, labels) && selectorEqual(a.Workloads, b.Workloads, labels)
}

func serviceEqual(a, b *policy.Service) bool {
	return a.Protocol == b.Protocol && a.Port == b.Port && a.EndPort == b.EndPort && a.Name == b.Name &&
		intpEqual(a.Type, b.Type) && intpEqual(a.Code, b.Code)
}

func ruleEqual(x, y *policy.Rule, labels *[]string) bool {
	if x.ID != y.ID || x.Name != y.Name || x.Action != y.Action || x.Log != y.Log || x.Pos != y.Pos ||
		len(x.Peers) != len(y.Peers) || len(x.Services) != len(y.Services) {
		return false
	}
	for i := range x.Peers {
		if !peerEqual(&x.Peers[i], &y.Peers[i], labels) {
			return false
		}
	}
	for i := range x.Services {
		if !serviceEqual(&x.Services[i], &y.Services[i]) {
			return false
		}
	}
	return true
}

func ruleListEqual(a, b []policy.Rule, labels *[]string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !ruleEqual(&a[i], &b[i], labels) {
			return false
		}
	}
	return true
}

// snapshot is a deep copy of a policy with the labels of its selectors
// also listed, in the order policyEqual meets them.
type snapshot struct {
	p      *policy.Policy
	labels []string
	shared bool // p is the caller's own (NewShared): compared by pointer
}

func snapshotOf(p *policy.Policy) snapshot {
	c := *p
	c.Subject.Namespaces, c.Subject.Workloads = cloneNSMatch(p.Subject.Namespaces), cloneSelector(p.Subject.Workloads)
	c.Ingress, c.Egress = cloneRules(p.Ingress), cloneRules(p.Egress)
	s := snapshot{p: &c}
	s.labels = appendLabels(appendLabels(s.labels, c.Subject.Namespaces.Selector), c.Subject.Workloads)
	for _, rs := range [][]policy.Rule{c.Ingress, c.Egress} {
		for _, r := range rs {
			for _, pe := range r.Peers {
				s.labels = appendLabels(appendLabels(s.labels, pe.Namespaces.Selector), pe.Workloads)
			}
		}
	}
	return s
}

func sameName(a, b *policy.Policy) bool {
	return a.Kind == b.Kind && a.Namespace == b.Namespace && a.Name == b.Name
}

// equal reports whether b is the policy s copied, unchanged.
func (s *snapshot) equal(b *policy.Policy) bool {
	if s.shared {
		return s.p == b
	}
	a, labels := s.p, s.labels
	return sameName(a, b) && a.Tier == b.Tier && a.Priority == b.Priority && a.Mode == b.Mode &&
		a.Isolate == b.Isolate && a.Pos == b.Pos && a.Subject.Segment == b.Subject.Segment &&
		nsMatchEqual(a.Subject.Namespaces, b.Subject.Namespaces, &labels) &&
		selectorEqual(a.Subject.Workloads, b.Subject.Workloads, &labels) &&
		ruleListEqual(a.Ingress, b.Ingress, &labels) && ruleListEqual(a.Egress, b.Egress, &labels)
}

// inventory is a copy of the objects besides policies and workloads that
// a compile depends on; SetPolicies compiles everything when they change.
type inventory struct {
	namespaces []policy.Namespace
	segments   []policy.Segment
	walls      []policy.Wall
	conflict   []policy.ConflictClass
}

func newInventory(set *policy.Set) inventory {
	var inv inventory
	for _, ns := range set.Namespaces {
		c := *ns
		c.Labels = maps.Clone(ns.Labels)
		inv.namespaces = append(inv.namespaces, c)
	}
	for _, s := range set.Segments {
		c := *s
		c.Namespaces, c.Workloads, c.CIDRs = cloneNSMatch(s.Namespaces), cloneSelector(s.Workloads), cloneCIDRs(s.CIDRs)
		inv.segments = append(inv.segments, c)
	}
	for _, w := range set.Walls {
		c := *w
		c.Segments = slices.Clone(w.Segments)
		inv.walls = append(inv.walls, c)
	}
	for _, cc := range set.ConflictClasses {
		c := *cc
		c.Datasets = slices.Clone(cc.Datasets)
		inv.conflict = append(inv.conflict, c)
	}
	return inv
}

// same reports whether set holds the objects inv copied, unchanged.
func (inv *inventory) same(set *policy.Set) bool {
	return eqPtrs(inv.namespaces, set.Namespaces, func(a *policy.Namespace, b *policy.Namespace) bool {
		return a.Name == b.Name && a.Pos == b.Pos && maps.Equal(a.Labels, b.Labels)
	}) && eqPtrs(inv.segments, set.Segments, func(a, b *policy.Segment) bool {
		return a.Name == b.Name && a.Pos == b.Pos && nsMatchEqual(a.Namespaces, b.Namespaces, nil) &&
			selectorEqual(a.Workloads, b.Workloads, nil) && cidrsEqual(a.CIDRs, b.CIDRs)
	}) && eqPtrs(inv.walls, set.Walls, func(a, b *policy.Wall) bool {
		return a.Name == b.Name && a.Pos == b.Pos && slices.Equal(a.Segments, b.Segments)
	}) && eqPtrs(inv.conflict, set.ConflictClasses, func(a, b *policy.ConflictClass) bool {
		return a.Name == b.Name && a.Subjects == b.Subjects && a.Scope == b.Scope && a.Window == b.Window && a.Pos == b.Pos &&
			slices.Equal(a.Datasets, b.Datasets)
	})
}

func eqPtrs[T any](have []T, got []*T, eq func(a, b *T) bool) bool {
	if len(have) != len(got) {
		return false
	}
	for i := range have {
		if !eq(&have[i], got[i]) {
			return false
		}
	}
	return true
}

// snapshotFor is snapshotOf, or for a Compiler made by NewShared the
// policy itself: its caller never edits it in place.
func snapshotFor(p *policy.Policy, shared bool) snapshot {
	if shared {
		return snapshot{p: p, shared: true}
	}
	return snapshotOf(p)
}
