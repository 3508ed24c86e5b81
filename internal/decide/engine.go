package decide

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
)

// Outcome is what a decision says; the outcomes are policy's.
type Outcome = policy.Outcome

// The outcomes.
const (
	Allow      = policy.OutcomeAllow
	Deny       = policy.OutcomeDeny
	Hold       = policy.OutcomeHold
	Quarantine = policy.OutcomeQuarantine
)

// DefaultHoldTimeout is how long an operator has when a hold names no
// timeout.
const DefaultHoldTimeout = 2 * time.Minute

// NoRuleMatched is the Reason of a decision no rule made.
const NoRuleMatched = "no rule matched: default"

// Decision is the answer for one escalation.
type Decision struct {
	Outcome Outcome
	// Rule is the deciding rule's name; "" when no rule matched.
	Rule string
	// Reason says why, for people and the record: "rule NAME (order N)",
	// NoRuleMatched, or the failure of a condition.
	Reason string
	// Remember is how long the decision holds for the same source
	// identity, destination and port; 0: this connection only.
	Remember time.Duration
	// HoldTimeout and OnTimeout, for Hold: how long an operator has, and
	// what the connection gets when nobody decides (Allow or Deny).
	HoldTimeout time.Duration
	OnTimeout   Outcome
	// Failed says that the condition of Rule failed to evaluate (its cost
	// limit, a missing key): the decision is Deny, never remembered.
	Failed bool
}

// Person says whether an operator must decide.
func (d Decision) Person() bool { return d.Outcome == Hold }

// Decider decides escalations. Implementations are safe for concurrent
// use; Decide neither blocks nor does I/O.
type Decider interface {
	Decide(Request) Decision
}

var _ Decider = (*Engine)(nil)

// DeciderFunc is a Decider of a function, for fakes.
type DeciderFunc func(Request) Decision

// Decide calls f.
func (f DeciderFunc) Decide(r Request) Decision { return f(r) }

// Options configure an engine; the zero value is usable.
type Options struct {
	// Location is the zone of `now` for rules without a timeZone; nil: UTC.
	Location *time.Location
	// Default is the outcome when no rule matched; "": Hold (ask an
	// operator, deny after HoldTimeout).
	Default Outcome
	// HoldTimeout is the timeout of the default hold and of rules that
	// hold without one; 0: DefaultHoldTimeout.
	HoldTimeout time.Duration
	// CostLimit bounds one evaluation of a condition; 0: DefaultCostLimit.
	CostLimit uint64
	// Rates counts escalations per source; share one between the engines
	// of successive rule sets. nil: a new one of DefaultMaxSources.
	Rates *Rates
}

// Engine decides escalations by an ordered set of rules. It is
// immutable and safe for concurrent use; a new rule set is a new Engine.
type Engine struct {
	rules []*compiled
	opts  Options
	locs  []*time.Location // the distinct zones of the rules
	rates *Rates
}

type compiled struct {
	rule *policy.DecisionRule
	prg  cel.Program // nil: no condition
	loc  int         // index into Engine.locs
	dec  Decision
}

// Compile builds an engine from a rule set, type-checking every rule.
// The whole set is refused when any rule is wrong (every problem is
// reported, at its rule's positions): nothing is half-applied.
func Compile(rules []*policy.DecisionRule, opts Options) (*Engine, error) {
	if opts.Default == "" {
		opts.Default = Hold
	}
	if opts.HoldTimeout <= 0 {
		opts.HoldTimeout = DefaultHoldTimeout
	}
	if opts.CostLimit == 0 {
		opts.CostLimit = DefaultCostLimit
	}
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	if opts.Rates == nil {
		opts.Rates = NewRates(0)
	}
	var errs source.Errors
	if opts.Default != Allow && opts.Default != Deny && opts.Default != Hold {
		errs.Add(source.Pos{}, "default", "decide: default outcome %q; valid: allow, deny, hold", opts.Default)
	}
	e := &Engine{opts: opts, rates: opts.Rates, locs: []*time.Location{opts.Location}}
	set := &policy.Set{DecisionRules: rules}
	var verrs source.Errors
	if err := policy.Validate(set); errors.As(err, &verrs) {
		errs = append(errs, verrs...)
	} else if err != nil {
		errs.Add(source.Pos{}, "", "decide: %v", err)
	}
	for _, r := range rules {
		c, cerrs := e.compile(r)
		errs = append(errs, cerrs...)
		e.rules = append(e.rules, c)
	}
	if len(errs) > 0 {
		return nil, errs.Err()
	}
	slices.SortStableFunc(e.rules, func(a, b *compiled) int { return a.rule.Order - b.rule.Order })
	return e, nil
}

func (e *Engine) compile(r *policy.DecisionRule) (*compiled, source.Errors) {
	var errs source.Errors
	if !r.Outcome.Valid() {
		errs.Add(r.Pos, "spec.outcome", "unknown outcome %q; valid: allow, deny, hold, quarantine", r.Outcome)
	}
	c := &compiled{rule: r, dec: Decision{
		Outcome: r.Outcome, Rule: r.Name, Reason: fmt.Sprintf("rule %s (order %d)", r.Name, r.Order), Remember: r.Remember,
	}}
	if r.Outcome == Hold {
		c.dec.HoldTimeout, c.dec.OnTimeout = r.HoldTimeout, r.OnTimeout
		if c.dec.HoldTimeout <= 0 {
			c.dec.HoldTimeout = e.opts.HoldTimeout
		}
		if c.dec.OnTimeout == "" {
			c.dec.OnTimeout = Deny
		}
	}
	loc, err := location(r.TimeZone, e.opts.Location)
	if err != nil {
		errs.Add(r.Pos, "spec.timeZone", "%v", err)
	}
	if c.loc = slices.Index(e.locs, loc); c.loc < 0 {
		c.loc = len(e.locs)
		e.locs = append(e.locs, loc)
	}
	if r.Condition == "" {
		return c, errs
	}
	prg, cerrs := program(r.Condition, r.ConditionPos, e.opts.CostLimit)
	c.prg = prg
	errs = append(errs, cerrs...)
	return c, errs
}

// Decide answers one escalation: the first rule, by order, that applies
// to it and whose condition holds decides; a condition that fails to
// evaluate decides Deny (Failed); when none decides, the default does.
// The escalation is counted in the source's rate first.
func (e *Engine) Decide(r Request) Decision {
	e.rates.Record(r.Source.Key(), r.Time)
	src, _ := netip.ParseAddr(r.Source.Address)
	dst, _ := netip.ParseAddr(r.Destination.Address)
	var act *activation
	for _, c := range e.rules {
		if !applies(&c.rule.Scope, &r, src.Unmap(), dst.Unmap()) {
			continue
		}
		if c.prg == nil {
			return c.dec
		}
		if act == nil {
			act = newActivation(e, &r)
		}
		act.loc = c.loc
		out, _, err := c.prg.Eval(act)
		switch {
		case err != nil:
			return c.failed(err)
		case out == types.True:
			return c.dec
		case out != types.False:
			return c.failed(fmt.Errorf("the condition gave %v, not a bool", out))
		}
	}
	d := Decision{Outcome: e.opts.Default, Reason: NoRuleMatched}
	if d.Outcome == Hold {
		d.HoldTimeout, d.OnTimeout = e.opts.HoldTimeout, Deny
	}
	return d
}

func (c *compiled) failed(err error) Decision {
	return Decision{Outcome: Deny, Rule: c.rule.Name, Failed: true,
		Reason: fmt.Sprintf("rule %s (order %d): the condition failed, denied: %v", c.rule.Name, c.rule.Order, err)}
}

// Rules lists the rules in the order they are tried.
func (e *Engine) Rules() []*policy.DecisionRule {
	out := make([]*policy.DecisionRule, len(e.rules))
	for i, c := range e.rules {
		out[i] = c.rule
	}
	return out
}
