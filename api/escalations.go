package api

import "time"

// Escalations: a connection that a policy rule with action escalate (or
// a first access to a conflict class) holds in the kernel is asked about
// by its host's agent (POST /v1/escalations, which answers once it is
// decided); the manager decides it by its DecisionRules, or holds it for
// an operator (POST /v1/escalations/{id}/approve or /deny). Every
// escalation is recorded (GET /v1/escalations) and every decision audited.

// The verdicts an agent gives the kernel.
const (
	VerdictAllow = "allow"
	VerdictDeny  = "deny"
)

// The states of an escalation record.
const (
	EscalationHeld    = "held"    // waiting for an operator
	EscalationDecided = "decided" // answered: Outcome and By say how
)

// EscalationEndpoint is one end of an escalated connection as its agent
// knows it: a workload (Namespace and Name set) or an outside address.
type EscalationEndpoint struct {
	Address   string            `json:"address"`
	Namespace string            `json:"namespace,omitempty"`
	Name      string            `json:"name,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Identity  uint32            `json:"identity,omitempty"` // the dataplane's identity of the address; 0 unknown
	Image     string            `json:"image,omitempty"`    // the image digest, when the runtime told it
	Host      string            `json:"host,omitempty"`     // the workload's host, as the manager knows it (the agent's claim is not taken)
}

// EscalationRuleRef names a policy rule whose action escalate held the
// connection: its policy's namespace ("" cluster-wide) and name, and the
// rule's name (its index when it has none).
type EscalationRuleRef struct {
	Namespace string `json:"namespace,omitempty"`
	Policy    string `json:"policy"`
	Rule      string `json:"rule"`
}

// EscalationRequest is what an agent asks about one held connection
// (POST /v1/escalations). Protocol is tcp, udp, sctp, icmp or icmpv6;
// Port the destination port (for ICMP, type<<8 | code). Deadline is when
// the agent gives the connection its timeout verdict: the manager answers
// by then.
type EscalationRequest struct {
	Protocol      string              `json:"protocol"`
	Source        EscalationEndpoint  `json:"source"`
	Destination   EscalationEndpoint  `json:"destination"`
	SourcePort    int                 `json:"sourcePort,omitempty"`
	Port          int                 `json:"port"`
	Rules         []EscalationRuleRef `json:"rules,omitempty"`
	ConflictClass string              `json:"conflictClass,omitempty"`
	Held          time.Time           `json:"held"`
	Deadline      time.Time           `json:"deadline"`
}

// EscalationDecision answers POST /v1/escalations: Verdict allow or deny;
// Remember, a Go duration, how long the agent may answer the same source
// identity, destination and port without asking ("": this connection
// only); Reason who or what decided.
type EscalationDecision struct {
	ID       string `json:"id"`
	Verdict  string `json:"verdict"`
	Remember string `json:"remember,omitempty"`
	Reason   string `json:"reason"`
}

// Escalation is the manager's record of one escalation. Outcome is the
// decision's (allow, deny, quarantine; "" while held); Rule the decision
// rule that decided it, By the person ("token:NAME (ROLE)"), or "timeout"
// when the hold ran out; TookMs how long from asked to decided.
type Escalation struct {
	ID            string              `json:"id"`
	Host          string              `json:"host"`
	State         string              `json:"state"`
	Protocol      string              `json:"protocol"`
	Source        EscalationEndpoint  `json:"source"`
	Destination   EscalationEndpoint  `json:"destination"`
	SourcePort    int                 `json:"sourcePort,omitempty"`
	Port          int                 `json:"port"`
	Rules         []EscalationRuleRef `json:"rules,omitempty"`
	ConflictClass string              `json:"conflictClass,omitempty"`
	Asked         time.Time           `json:"asked"`
	Deadline      time.Time           `json:"deadline"`
	OnTimeout     string              `json:"onTimeout,omitempty"` // for a held one: what it gets at Deadline
	Decided       *time.Time          `json:"decided,omitempty"`
	Outcome       string              `json:"outcome,omitempty"`
	Verdict       string              `json:"verdict,omitempty"`
	Rule          string              `json:"rule,omitempty"`
	By            string              `json:"by,omitempty"`
	Reason        string              `json:"reason,omitempty"`
	Remember      string              `json:"remember,omitempty"`
	TookMs        float64             `json:"tookMs,omitempty"`
}

// EscalationList answers GET /v1/escalations: the newest first.
type EscalationList struct {
	Items []Escalation `json:"items"`
}

// EscalationAnswer is an operator's answer to a held escalation
// (POST /v1/escalations/{id}/approve or /deny); the body is optional.
type EscalationAnswer struct {
	Reason string `json:"reason,omitempty"`
}

// EscalationCounters are an agent's counts of escalated packets (its
// escalate.Holder's; docs/escalate.md): read from the queue, questions
// asked, verdicts, and what failed closed by cause.
type EscalationCounters struct {
	Queued       uint64            `json:"queued"`
	Asked        uint64            `json:"asked"`
	Allowed      uint64            `json:"allowed"`
	Denied       uint64            `json:"denied"`
	FromMemory   uint64            `json:"fromMemory"`
	Settled      uint64            `json:"settled"`
	TimedOut     uint64            `json:"timedOut"`
	Replaced     uint64            `json:"replaced"`
	FailedClosed map[string]uint64 `json:"failedClosed,omitempty"`
	Pending      int               `json:"pending"`
	Remembered   int               `json:"remembered"`
}
