package policy

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/source"
)

// Validate checks what no single object can check alone: that names are
// unique, that every segment a policy, wall or conflict class names exists,
// and that no address belongs to two workloads. It reports every problem.
func Validate(s *Set) error {
	var errs source.Errors
	segs := map[string]*Segment{}
	for _, seg := range s.Segments {
		if prev, ok := segs[seg.Name]; ok {
			errs.Add(seg.Pos, "metadata.name", "segment %q is defined twice (first at %s)", seg.Name, prev.Pos)
			continue
		}
		segs[seg.Name] = seg
	}
	known := func(pos Pos, path, name string) {
		if _, ok := segs[name]; !ok {
			errs.Add(pos, path, "segment %q does not exist; defined segments: %s", name, segmentNames(segs))
		}
	}
	seenNS := map[string]*Namespace{}
	for _, ns := range s.Namespaces {
		// The same namespace may come from the inventory and from a v1
		// Namespace object, as long as both say the same.
		if prev, ok := seenNS[ns.Name]; ok && labelKey(withNameLabel(prev).Labels) != labelKey(withNameLabel(ns).Labels) {
			errs.Add(ns.Pos, "metadata.labels", "namespace %q is defined twice with different labels (first at %s)", ns.Name, prev.Pos)
		}
		seenNS[ns.Name] = ns
	}
	policies := map[string]*Policy{}
	for _, p := range s.Policies {
		if prev, ok := policies[p.Key()]; ok {
			errs.Add(p.Pos, "metadata.name", "%s is defined twice (first at %s)", p.Key(), prev.Pos)
		}
		policies[p.Key()] = p
		if p.Subject.Segment != "" {
			known(p.Pos, "spec.appliesTo.segment", p.Subject.Segment)
		}
		for _, d := range []Direction{Ingress, Egress} {
			for i, r := range p.Rules(d) {
				for j, peer := range r.Peers {
					if peer.Segment != "" {
						known(r.Pos, fmt.Sprintf("spec.%s[%d].%s[%d].segment", d, i, PeerField(d), j), peer.Segment)
					}
				}
			}
		}
	}
	for _, w := range s.Walls {
		for i, name := range w.Segments {
			known(w.Pos, fmt.Sprintf("spec.segments[%d]", i), name)
		}
	}
	for _, c := range s.ConflictClasses {
		if c.Subjects != "" {
			known(c.Pos, "spec.subjects", c.Subjects)
		}
		for i, d := range c.Datasets {
			known(c.Pos, fmt.Sprintf("spec.datasets[%d].segment", i), d.Segment)
		}
	}
	validateWorkloads(s.Workloads, &errs)
	validateDecisionRules(s.DecisionRules, &errs)
	return errs.Err()
}

func validateWorkloads(ws []*Workload, errs *source.Errors) {
	keys := map[string]*Workload{}
	owner := map[netip.Addr]*Workload{}
	for _, w := range ws {
		if prev, ok := keys[w.Key()]; ok {
			errs.Add(w.Pos, "name", "workload %s is defined twice (first at %s)", w.Key(), prev.Pos)
			continue
		}
		keys[w.Key()] = w
		for i, a := range w.IPs {
			a = a.Unmap()
			if prev, ok := owner[a]; ok && prev != w {
				errs.Add(w.Pos, fmt.Sprintf("ips[%d]", i), "address %s of %s already belongs to %s", a, w.Key(), prev.Key())
			}
			owner[a] = w
		}
	}
}

// PeerField is the field a rule of direction d names its peers in.
func PeerField(d Direction) string {
	if d == Egress {
		return "to"
	}
	return "from"
}

func segmentNames(segs map[string]*Segment) string {
	if len(segs) == 0 {
		return "(none)"
	}
	names := make([]string, 0, len(segs))
	for n := range segs {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
