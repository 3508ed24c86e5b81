package decide

import (
	"net/netip"
	"slices"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// applies says whether a rule of scope s applies to r: every reason r
// escalated is among the scope's rules and conflict classes (or they are
// both empty), and both ends match.
func applies(s *policy.DecisionScope, r *Request, src, dst netip.Addr) bool {
	if len(s.Rules) > 0 || len(s.ConflictClasses) > 0 {
		esc := &r.Escalation
		if len(esc.Rules) == 0 && esc.ConflictClass == "" {
			return false
		}
		for _, ref := range esc.Rules {
			if !slices.ContainsFunc(s.Rules, func(m policy.EscalatingRule) bool {
				return m.Namespace == ref.Namespace && m.Policy == ref.Policy && (m.Rule == "" || m.Rule == ref.Rule)
			}) {
				return false
			}
		}
		if esc.ConflictClass != "" && !slices.Contains(s.ConflictClasses, esc.ConflictClass) {
			return false
		}
	}
	return matches(s.From, &r.Source, src) && matches(s.To, &r.Destination, dst)
}

// matches says whether m (nil: any) chooses the endpoint e at address a.
func matches(m *policy.EndpointMatch, e *Endpoint, a netip.Addr) bool {
	if m == nil || (m.Workloads == nil && len(m.CIDRs) == 0) {
		return true
	}
	if m.Workloads != nil && e.Workload && m.Workloads.Matches(e.Labels) &&
		m.Namespaces.Matches(&policy.Namespace{Name: e.Namespace, Labels: e.NamespaceLabels}) {
		return true
	}
	if a.IsValid() {
		for _, c := range m.CIDRs {
			if c.Contains(a) {
				return true
			}
		}
	}
	return false
}
