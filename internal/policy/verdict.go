package policy

import "net/netip"

// Endpoint is one end of a connection: an address, and the workload that
// owns it (nil for an address outside the inventory).
type Endpoint struct {
	Addr     netip.Addr
	Workload *Workload
}

func (e Endpoint) String() string {
	if e.Workload != nil && !e.Addr.IsValid() {
		return e.Workload.Key() + " (labels " + labelKey(e.Workload.Labels) + ")"
	}
	if e.Workload != nil {
		return e.Workload.Key() + " (" + e.Addr.String() + ")"
	}
	return e.Addr.String()
}

// Probe is a new connection to judge. Port is the destination port for TCP,
// UDP and SCTP; for ICMP and ICMPv6 it is type<<8 | code.
type Probe struct {
	From, To Endpoint
	Protocol Protocol
	Port     int
}

// RuleRef names one rule of one policy.
type RuleRef struct {
	Policy    string // Policy.Key()
	Tier      Tier
	Direction Direction
	Index     int // position in the policy's rules of that direction; -1 for a policy's isolation default
	ID        string
	Action    Action
	Log       bool
	Pos       Pos
}

// Side is the verdict of one side of a connection: the source's egress or the
// destination's ingress.
type Side struct {
	// Action is allow, deny, reject or escalate. A side with no policy of its
	// own (an outside address, or a workload no policy selects) allows.
	Action Action
	// Rule is the rule that decided, nil when the side fell through every
	// tier (Reason says why).
	Rule   *RuleRef
	Reason string
	// Passed lists the rules that matched on the way but did not decide:
	// pass rules, and rules of observe-mode policies.
	Passed []RuleRef
	// WouldDeny is the observe-mode rule that would have denied the
	// connection had its policy been enforced; Action is then what the
	// enforced policies decided.
	WouldDeny *RuleRef
}

// Verdict is the judgement of a whole connection.
type Verdict struct {
	// Action is allow, deny (also for reject) or escalate.
	Action  Action
	Egress  Side // at the source
	Ingress Side // at the destination
	// Wall is set when a wall forbids the connection; it decides before any
	// tier.
	Wall *Wall
	// ConflictClass is set when the connection reaches a dataset of a
	// conflict class for a workload the class binds: decided at run time.
	ConflictClass *ConflictClass
}
