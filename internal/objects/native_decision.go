package objects

import (
	"fmt"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/decide"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"go.yaml.in/yaml/v3"
)

// Bounds of a decision rule's durations.
const (
	maxHoldTimeout = 24 * time.Hour
	maxRemember    = 30 * 24 * time.Hour
)

// decisionRule converts a DecisionRule; spec is its node, for the
// position of the condition. Its condition and zone are checked by
// internal/decide, the package that runs them.
func (c *converter) decisionRule(m api.Metadata, s api.DecisionRuleSpec, pos policy.Pos, spec *yaml.Node) *policy.DecisionRule {
	r := &policy.DecisionRule{Name: m.Name, Outcome: policy.Outcome(s.Outcome), Condition: s.Condition,
		OnTimeout: policy.Outcome(s.OnTimeout), TimeZone: s.TimeZone, Pos: pos}
	switch {
	case s.Order == nil:
		c.errs.Add(pos, "spec.order", "a decision rule needs an order (0-1000000, lower is tried first)")
	case *s.Order < 0 || *s.Order > 1_000_000:
		c.errs.Add(pos, "spec.order", "order %d is out of range 0-1000000 (lower is tried first)", *s.Order)
	default:
		r.Order = *s.Order
	}
	switch {
	case s.Outcome == "":
		c.errs.Add(pos, "spec.outcome", "a decision rule needs an outcome: allow, deny, hold or quarantine")
	case !r.Outcome.Valid():
		c.errs.Add(pos, "spec.outcome", "unknown outcome %q; valid: allow, deny, hold, quarantine", s.Outcome)
	}
	if r.Outcome != policy.OutcomeHold {
		if s.HoldTimeout != "" || s.OnTimeout != "" {
			c.errs.Add(pos, "spec.holdTimeout", "holdTimeout and onTimeout are for outcome hold; remove them or hold")
		}
	} else {
		r.HoldTimeout = c.duration(pos, "spec.holdTimeout", s.HoldTimeout, maxHoldTimeout)
		switch r.OnTimeout {
		case "", policy.OutcomeDeny, policy.OutcomeAllow:
		default:
			c.errs.Add(pos, "spec.onTimeout", "unknown onTimeout %q; valid: deny (the default), allow", s.OnTimeout)
		}
	}
	r.Remember = c.duration(pos, "spec.remember", s.Remember, maxRemember)
	if s.Escalations != nil {
		r.Scope = c.decisionScope(*s.Escalations)
	}
	if n := field(spec, "condition"); n != nil {
		r.ConditionPos = c.pos(n)
	}
	c.errs = append(c.errs, decide.Check(r)...)
	return r
}

// duration reads a Go duration ("90s", "10m", "1h30m"), 1s to limit.
func (c *converter) duration(pos policy.Pos, path, s string, limit time.Duration) time.Duration {
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second || d > limit {
		c.errs.Add(pos, path, "invalid duration %q: write one from 1s to %s, such as 90s, 10m or 1h30m", s, limit)
		return 0
	}
	return d
}

func (c *converter) decisionScope(s api.EscalationsMatch) policy.DecisionScope {
	out := policy.DecisionScope{ConflictClasses: s.ConflictClasses}
	for i, r := range s.Rules {
		p := fmt.Sprintf("spec.escalations.rules[%d]", i)
		if r.Policy == "" {
			c.errs.Add(r.Pos, p+".policy", "name the policy whose escalate rule this is")
		} else {
			c.name(p+".policy", r.Pos, r.Policy)
		}
		if r.Namespace != "" {
			if msg := policy.DNSLabelProblem(r.Namespace); msg != "" {
				c.errs.Add(r.Pos, p+".namespace", "%s", msg)
			}
		}
		out.Rules = append(out.Rules, policy.EscalatingRule{Namespace: r.Namespace, Policy: r.Policy, Rule: r.Rule})
	}
	for i, n := range s.ConflictClasses {
		c.name(fmt.Sprintf("spec.escalations.conflictClasses[%d]", i), s.Pos, n)
	}
	out.From = c.endpointMatch("spec.escalations.from", s.From)
	out.To = c.endpointMatch("spec.escalations.to", s.To)
	return out
}

func (c *converter) endpointMatch(path string, m *api.EndpointMatch) *policy.EndpointMatch {
	if m == nil {
		return nil
	}
	out := &policy.EndpointMatch{Namespaces: c.namespaces(path, m.Pos, m.Namespaces, m.NamespaceSelector),
		Workloads: c.selector(path+".selector", m.Selector)}
	if out.Workloads == nil && !out.Namespaces.All() {
		out.Workloads = &policy.Selector{} // every workload of those namespaces
	}
	for i, b := range m.CIDRs {
		if cidr, ok := c.cidr(fmt.Sprintf("%s.cidrs[%d]", path, i), b.Pos, b.CIDR, b.Except); ok {
			out.CIDRs = append(out.CIDRs, cidr)
		}
	}
	return out
}
