// Package escalations is the manager's concern for questionable
// connections: an agent asks about a connection that a policy held in its
// kernel (Ask), and the Service decides it with the DecisionRules of the
// policy revision in force (internal/decide; the engine is compiled again
// when a revision lands, over one shared decide.Rates), or holds it for an
// operator (Approve, Deny) until the hold's timeout gives it the rule's
// onTimeout. The ends are taken from the manager's inventory, not from
// the agent (Inventory): a host speaks only for its own workloads. Every
// escalation is recorded (List, Follow), bounded in
// number, and every decision is written to the audit log
// (auditlog.Committer) before it is answered: a decision that cannot be
// audited is a denial.
//
// An escalation that names a conflict class (the first access to a
// dataset of a dynamic wall) is decided by the source's binding first
// (walls.go, over internal/manager/bindings): bound to another dataset,
// it is denied whatever the rules say; bound to this one, or unbound,
// the decision rules decide what the escalating policy rules asked, or,
// when none did, the binding alone allows; an allowed first access binds
// by compare-and-set, and a lost race or a store error denies.
//
// The records live in the memory of the manager the agent asked; with
// several managers, an operator's answer must reach the one holding it
// (docs/manager.md).
package escalations

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/decide"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/auditlog"
	"github.com/bulkhead-dev/bulkhead/internal/manager/bindings"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Defaults of Config.
const (
	DefaultMaxRecords = 10_000
	DefaultMaxHeld    = 1024
	// MaxWait bounds how long one escalation may wait for its decision.
	MaxWait = 10 * time.Minute
	// historyPerSource bounds the earlier decisions a condition sees.
	historyPerSource = 32
)

// ByTimeout is the By of a hold that ran out.
const ByTimeout = "timeout"

// Rules gives the decision rules in force. DecisionRules is called for
// every escalation and must answer from memory or a cheap read; the
// engine is compiled again only when rev changes.
type Rules interface {
	DecisionRules(ctx context.Context) (rev int64, rules []*policy.DecisionRule, err error)
}

// RulesFunc is a Rules of a function.
type RulesFunc func(ctx context.Context) (int64, []*policy.DecisionRule, error)

// DecisionRules calls f.
func (f RulesFunc) DecisionRules(ctx context.Context) (int64, []*policy.DecisionRule, error) {
	return f(ctx)
}

// Inventory is what the manager knows of the workloads the hosts
// reported (and the bounds it held each report to). Owner is safe for
// concurrent use and answers from memory.
type Inventory interface {
	Owner(a netip.Addr) (api.HostWorkload, bool)
}

// Config configures a Service; Rules and Audit are required.
type Config struct {
	Rules Rules
	Audit auditlog.Committer
	// Inventory, when set, vouches for the ends of an escalation: an
	// agent's claims about them (namespace, name, labels) are replaced by
	// what the manager holds, an address it holds no workload for is an
	// outside address, and a host may ask only about connections of which
	// one end is its own workload. nil: the agent's claims are taken as
	// they are (tests).
	Inventory Inventory
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
	// Location is the zone of `now` for rules without one (default UTC).
	Location *time.Location
	// Classes and Bindings, both set, decide an escalation that names a
	// conflict class by the source's binding (walls.go): a binding to
	// another dataset denies, and an allowed first access binds. nil:
	// such an escalation goes to the decision rules like any other.
	Classes  Classes
	Bindings *bindings.Bindings
	// MaxRecords bounds the escalations kept (DefaultMaxRecords); the
	// oldest decided go first. MaxHeld bounds those held for an operator
	// at once (DefaultMaxHeld); past it, a hold is denied at once.
	MaxRecords, MaxHeld int
}

// Service decides escalations and keeps their records. It is safe for
// concurrent use.
type Service struct {
	cfg   Config
	log   *slog.Logger
	rates *decide.Rates

	engMu  sync.Mutex
	eng    *decide.Engine
	engRev int64

	mu      sync.Mutex
	records map[string]*record
	order   []*record // oldest first
	held    int
	history map[string][]decide.PastDecision // by source key, newest last
	subs    map[chan api.Escalation]struct{}
}

// record is one escalation; a held one has answer and done.
type record struct {
	api.Escalation
	answer   chan answer   // an operator's, 1-buffered
	answered bool          // an answer was sent (mu)
	done     chan struct{} // closed once decided
}

type answer struct {
	outcome decide.Outcome
	actor   audit.Actor
	by      string
	reason  string
}

// New makes a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Rules == nil || cfg.Audit == nil {
		return nil, fmt.Errorf("escalations: Config.Rules and Config.Audit are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxRecords <= 0 {
		cfg.MaxRecords = DefaultMaxRecords
	}
	if cfg.MaxHeld <= 0 {
		cfg.MaxHeld = DefaultMaxHeld
	}
	return &Service{cfg: cfg, log: cfg.Logger.With("component", "escalations"), rates: decide.NewRates(0), engRev: -1,
		records: map[string]*record{}, history: map[string][]decide.PastDecision{}, subs: map[chan api.Escalation]struct{}{}}, nil
}

// engine is the engine of the rules in force, compiled when they changed.
// A rule set that does not compile (the manager validated it when it was
// applied, so this is a fault) keeps the previous engine.
func (s *Service) engine(ctx context.Context) (*decide.Engine, error) {
	rev, rules, err := s.cfg.Rules.DecisionRules(ctx)
	if err != nil {
		return nil, fmt.Errorf("escalations: read the decision rules: %w", err)
	}
	s.engMu.Lock()
	defer s.engMu.Unlock()
	if s.eng != nil && rev == s.engRev {
		return s.eng, nil
	}
	eng, err := decide.Compile(rules, decide.Options{Location: s.cfg.Location, Rates: s.rates})
	if err != nil {
		if s.eng != nil {
			s.log.Error("decision rules of a revision do not compile; deciding by the previous ones", "revision", rev, "err", err)
			return s.eng, nil
		}
		return nil, fault.New(fault.Internal, fault.Details(err), "escalations: the decision rules of revision %d do not compile: %w", rev, err)
	}
	s.eng, s.engRev = eng, rev
	s.log.Info("decision rules in force", "revision", rev, "rules", len(rules))
	return eng, nil
}

// Ask decides one escalation from host, waiting while an operator is
// asked, until the hold's timeout, the request's deadline, or ctx ends
// (then it is denied).
func (s *Service) Ask(ctx context.Context, host string, req api.EscalationRequest) (api.EscalationDecision, error) {
	now := s.cfg.Now()
	dreq, err := s.request(now, req)
	if err != nil {
		return api.EscalationDecision{}, err
	}
	if req, err = s.vouch(host, req); err != nil {
		return api.EscalationDecision{}, err
	}
	dreq.Source, dreq.Destination = endpoint(req.Source), endpoint(req.Destination)
	eng, err := s.engine(ctx)
	if err != nil {
		return api.EscalationDecision{}, err
	}
	deadline := req.Deadline
	if deadline.IsZero() || deadline.After(now.Add(MaxWait)) {
		deadline = now.Add(MaxWait)
	}
	rec := &record{Escalation: api.Escalation{ID: newID(), Host: host, State: api.EscalationHeld, Protocol: req.Protocol,
		Source: req.Source, Destination: req.Destination, SourcePort: req.SourcePort, Port: req.Port, Rules: req.Rules,
		ConflictClass: req.ConflictClass, Asked: now.UTC(), Deadline: deadline.UTC()}}
	var acc *wallAccess
	if req.ConflictClass != "" && s.cfg.Classes != nil && s.cfg.Bindings != nil {
		var a answer
		var done bool
		if acc, a, done = s.wall(ctx, host, req); done {
			s.finish(ctx, rec, dreq, a, decide.Decision{})
			s.add(rec, false)
			return decisionOf(rec), nil
		}
	}
	s.mu.Lock()
	dreq.History.Decisions = append([]decide.PastDecision(nil), s.history[dreq.Source.Key()]...)
	s.mu.Unlock()
	d := eng.Decide(dreq)
	if d.Outcome != decide.Hold {
		a := s.bind(ctx, acc, answer{outcome: d.Outcome, actor: auditlog.System, reason: d.Reason})
		s.finish(ctx, rec, dreq, a, d)
		s.add(rec, false)
		return decisionOf(rec), nil
	}
	if until := now.Add(d.HoldTimeout); until.Before(deadline) {
		rec.Deadline = until.UTC()
	}
	rec.OnTimeout = string(d.OnTimeout)
	rec.Rule = d.Rule
	rec.Reason = d.Reason
	if !s.add(rec, true) {
		s.finish(ctx, rec, dreq, answer{outcome: decide.Deny, actor: auditlog.System,
			reason: fmt.Sprintf("%s: held for an operator, but %d are held already: denied", d.Reason, s.cfg.MaxHeld)}, d)
		return decisionOf(rec), nil
	}
	s.audit(ctx, auditlog.System, "escalation.hold", rec)
	return s.wait(ctx, rec, dreq, d, acc), nil
}

// wait waits for an operator's answer to a held escalation, its
// deadline, or the end of ctx.
func (s *Service) wait(ctx context.Context, rec *record, dreq decide.Request, d decide.Decision, acc *wallAccess) api.EscalationDecision {
	t := time.NewTimer(rec.Deadline.Sub(s.cfg.Now()))
	defer t.Stop()
	var a answer
	select {
	case a = <-rec.answer:
	case <-t.C:
		a = answer{outcome: d.OnTimeout, actor: auditlog.System, by: ByTimeout,
			reason: fmt.Sprintf("%s: nobody decided in time: %s", d.Reason, d.OnTimeout)}
	case <-ctx.Done():
		a = answer{outcome: decide.Deny, actor: auditlog.System, reason: "the agent stopped waiting: denied"}
	}
	d.Remember = 0 // an operator's answer, or a timeout, is for this connection only
	// The audit, and the binding of an allowed first access, must
	// outlive a request whose agent went away.
	ctx = context.WithoutCancel(ctx)
	s.finish(ctx, rec, dreq, s.bind(ctx, acc, a), d)
	return decisionOf(rec)
}

// request checks what an agent sent and makes the engine's request.
func (s *Service) request(now time.Time, req api.EscalationRequest) (decide.Request, error) {
	proto, ok := policy.ParseProtocol(req.Protocol)
	if !ok {
		return decide.Request{}, fault.New(fault.Invalid, nil, "escalation: protocol %q; valid: tcp, udp, sctp, icmp, icmpv6", req.Protocol)
	}
	for _, e := range []struct {
		field string
		ep    api.EscalationEndpoint
	}{{"source", req.Source}, {"destination", req.Destination}} {
		if _, err := netip.ParseAddr(e.ep.Address); err != nil {
			return decide.Request{}, fault.New(fault.Invalid, nil, "escalation: %s.address %q: want an IP address", e.field, e.ep.Address)
		}
		if (e.ep.Namespace == "") != (e.ep.Name == "") {
			return decide.Request{}, fault.New(fault.Invalid, nil, "escalation: %s: a workload has both namespace and name, an outside address neither", e.field)
		}
	}
	if req.Port < 0 || req.Port > 0xffff || req.SourcePort < 0 || req.SourcePort > 0xffff {
		return decide.Request{}, fault.New(fault.Invalid, nil, "escalation: port %d, sourcePort %d: want 0 to 65535", req.Port, req.SourcePort)
	}
	at := req.Held
	if at.IsZero() || at.After(now) {
		at = now
	}
	dr := decide.Request{Time: at, Source: endpoint(req.Source), Destination: endpoint(req.Destination),
		Port: req.Port, Protocol: proto, Escalation: decide.Escalation{ConflictClass: req.ConflictClass}}
	for _, r := range req.Rules {
		dr.Escalation.Rules = append(dr.Escalation.Rules, decide.RuleRef{Namespace: r.Namespace, Policy: r.Policy, Rule: r.Rule})
	}
	return dr, nil
}

// vouch replaces the agent's claims about both ends by the manager's
// inventory (Config.Inventory), and refuses a host that asks about
// connections none of whose ends is its own workload: hosts speak only
// for themselves.
func (s *Service) vouch(host string, req api.EscalationRequest) (api.EscalationRequest, error) {
	if s.cfg.Inventory == nil {
		return req, nil
	}
	own := false
	for _, e := range []*api.EscalationEndpoint{&req.Source, &req.Destination} {
		a, _ := netip.ParseAddr(e.Address) // request checked it
		w, ok := s.cfg.Inventory.Owner(a.Unmap())
		if !ok {
			// Not a workload the manager knows: an outside address, whatever the agent says.
			*e = api.EscalationEndpoint{Address: e.Address, Identity: e.Identity}
			continue
		}
		id := e.Identity
		if w.Identity != 0 {
			id = w.Identity
		}
		*e = api.EscalationEndpoint{Address: e.Address, Namespace: w.Namespace, Name: w.Name, Labels: w.Labels, Identity: id, Host: w.Host}
		own = own || w.Host == host
	}
	if !own {
		return req, fault.New(fault.Forbidden, nil, "escalation: host %s asked about %s -> %s, and neither is a workload it reported; a host asks only about its own workloads' connections",
			host, req.Source.Address, req.Destination.Address)
	}
	return req, nil
}

func endpoint(e api.EscalationEndpoint) decide.Endpoint {
	return decide.Endpoint{Workload: e.Name != "", Namespace: e.Namespace, Name: e.Name, Labels: e.Labels,
		Identity: int64(e.Identity), Image: e.Image, Address: e.Address, Host: e.Host}
}

func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func verdictOf(o decide.Outcome) string {
	if o == decide.Allow {
		return api.VerdictAllow
	}
	return api.VerdictDeny
}

func decisionOf(rec *record) api.EscalationDecision {
	return api.EscalationDecision{ID: rec.ID, Verdict: rec.Verdict, Remember: rec.Remember, Reason: rec.Reason}
}
