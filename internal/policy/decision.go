package policy

import (
	"slices"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/source"
)

// Outcome is what a decision rule does with the escalations it decides.
type Outcome string

// The outcomes of a decision rule.
const (
	OutcomeAllow      Outcome = "allow"      // let the connection through
	OutcomeDeny       Outcome = "deny"       // drop it
	OutcomeHold       Outcome = "hold"       // keep it held and ask an operator
	OutcomeQuarantine Outcome = "quarantine" // deny it and record the source for quarantine
)

// Outcomes lists the outcomes a decision rule may name.
var Outcomes = []Outcome{OutcomeAllow, OutcomeDeny, OutcomeHold, OutcomeQuarantine}

// Valid reports whether o is one of the outcomes.
func (o Outcome) Valid() bool { return slices.Contains(Outcomes, o) }

// DecisionRule decides escalated connections on the manager
// (internal/decide compiles and runs it). Rules are tried by Order; the
// first that applies to an escalation and whose condition holds decides.
type DecisionRule struct {
	Name         string
	Order        int
	Scope        DecisionScope
	Condition    string // a CEL expression of type bool; "" always holds
	ConditionPos Pos    // where the expression was written
	Outcome      Outcome
	HoldTimeout  time.Duration // for hold: how long an operator has
	OnTimeout    Outcome       // for hold: allow or deny when nobody decided
	Remember     time.Duration // 0: this connection only
	TimeZone     string        // IANA zone of `now`; "" the manager's
	Pos          Pos
}

// DecisionScope chooses the escalations a decision rule applies to. The
// reasons a connection escalated (the policy rules of either side, a
// first access to a conflict class) must all be among Rules and
// ConflictClasses, unless both are empty; From and To (nil: any) must
// match the two ends.
type DecisionScope struct {
	Rules           []EscalatingRule
	ConflictClasses []string
	From, To        *EndpointMatch
}

// EscalatingRule names a policy rule with action escalate: Rule "" is
// every escalating rule of the policy; an unnamed rule is named by its
// index, as its id is.
type EscalatingRule struct {
	Namespace string // "" for a cluster-wide policy
	Policy    string
	Rule      string
}

func (r EscalatingRule) String() string {
	s := r.Policy
	if r.Namespace != "" {
		s = r.Namespace + "/" + s
	}
	if r.Rule != "" {
		s += "/" + r.Rule
	}
	return s
}

// EndpointMatch chooses one end of a connection: a workload in the
// namespaces Namespaces chooses whose labels Workloads matches (the
// workload form, used when Workloads is not nil), or an address inside
// one of CIDRs. Either form may match.
type EndpointMatch struct {
	Namespaces NamespaceMatch
	Workloads  *Selector
	CIDRs      []CIDR
}

// validateDecisionRules refuses two decision rules of one order: which
// would be tried first would depend on their names.
func validateDecisionRules(rules []*DecisionRule, errs *source.Errors) {
	byOrder := map[int]*DecisionRule{}
	for _, r := range rules {
		if prev, ok := byOrder[r.Order]; ok {
			errs.Add(r.Pos, "spec.order", "order %d is also decision rule %q's (at %s); give each rule its own order, lower is tried first", r.Order, prev.Name, prev.Pos)
			continue
		}
		byOrder[r.Order] = r
	}
}
