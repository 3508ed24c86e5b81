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
	if m.Workloads != nil && e.Workload && m.Workloads.Matches(e.Labels) && inNamespace(m.Namespaces, e) {
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

// inNamespace says whether m chooses e's namespace; a namespace carries
// its name as the label kubernetes.io/metadata.name, as in policies.
func inNamespace(m policy.NamespaceMatch, e *Endpoint) bool {
	ns := &policy.Namespace{Name: e.Namespace, Labels: e.NamespaceLabels}
	if m.Selector != nil && e.NamespaceLabels[policy.MetadataNameLabel] != e.Namespace {
		ns.Labels = make(map[string]string, len(e.NamespaceLabels)+1)
		for k, v := range e.NamespaceLabels {
			ns.Labels[k] = v
		}
		ns.Labels[policy.MetadataNameLabel] = e.Namespace
	}
	return m.Matches(ns)
}
