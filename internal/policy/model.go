package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/source"
)

// Action is what a rule does with the connections it matches.
type Action string

// The actions a rule may take.
const (
	Allow    Action = "allow"    // let the connection through
	Deny     Action = "deny"     // drop it silently
	Reject   Action = "reject"   // refuse it (TCP reset or ICMP unreachable)
	Pass     Action = "pass"     // skip the rest of this tier, go on to the next
	Escalate Action = "escalate" // hold it while the manager decides
)

// Valid reports whether a is one of the five actions.
func (a Action) Valid() bool {
	switch a {
	case Allow, Deny, Reject, Pass, Escalate:
		return true
	}
	return false
}

// Tier orders policies: every policy of an earlier tier is consulted before
// any policy of a later one.
type Tier int

// The tiers, in evaluation order.
const (
	Emergency Tier = iota
	Infrastructure
	Environment
	Application
	Baseline
	numTiers
)

var tierNames = [numTiers]string{"emergency", "infrastructure", "environment", "application", "baseline"}

// TierNames lists the tiers in evaluation order.
func TierNames() []string { return tierNames[:] }

func (t Tier) String() string {
	if t >= 0 && t < numTiers {
		return tierNames[t]
	}
	return fmt.Sprintf("tier(%d)", int(t))
}

// ParseTier returns the tier with the given name.
func ParseTier(s string) (Tier, bool) {
	for i, n := range tierNames {
		if n == s {
			return Tier(i), true
		}
	}
	return 0, false
}

// Mode says whether a policy's denials are enforced or only reported.
type Mode string

// The policy modes.
const (
	Enforce Mode = "enforce"
	Observe Mode = "observe" // compute and report "would deny", let the connection through
)

// Direction is the side of a connection a rule guards.
type Direction int

// The two directions. Ingress rules guard a workload's incoming connections
// (judged at the destination); egress rules its outgoing ones (at the source).
const (
	Ingress Direction = iota
	Egress
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// Protocol is an IP protocol number.
type Protocol uint8

// The protocols a service may name.
const (
	ICMP   Protocol = 1
	TCP    Protocol = 6
	UDP    Protocol = 17
	ICMPv6 Protocol = 58
	SCTP   Protocol = 132
)

var protocolNames = map[Protocol]string{ICMP: "icmp", TCP: "tcp", UDP: "udp", ICMPv6: "icmpv6", SCTP: "sctp"}

// Protocols lists the protocols Bulkhead knows by name.
var Protocols = []Protocol{TCP, UDP, SCTP, ICMP, ICMPv6}

func (p Protocol) String() string {
	if n, ok := protocolNames[p]; ok {
		return n
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// ParseProtocol accepts a protocol name in any case.
func ParseProtocol(s string) (Protocol, bool) {
	s = strings.ToLower(s)
	for p, n := range protocolNames {
		if n == s {
			return p, true
		}
	}
	return 0, false
}

// HasPorts reports whether connections of p have ports (as opposed to ICMP
// type and code).
func (p Protocol) HasPorts() bool { return p == TCP || p == UDP || p == SCTP }

// Requirement is one term of a label selector's matchExpressions.
type Requirement struct {
	Key      string
	Operator string // In, NotIn, Exists, DoesNotExist
	Values   []string
}

// Selector chooses objects by their labels, as a Kubernetes label selector
// does: all of MatchLabels and all of MatchExpressions must hold. The zero
// Selector matches everything.
type Selector struct {
	MatchLabels      map[string]string
	MatchExpressions []Requirement
}

// Matches reports whether labels satisfy s. A nil selector matches nothing.
func (s *Selector) Matches(labels map[string]string) bool {
	if s == nil {
		return false
	}
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		v, ok := labels[r.Key]
		switch r.Operator {
		case "In":
			if !ok || !contains(r.Values, v) {
				return false
			}
		case "NotIn":
			if ok && contains(r.Values, v) {
				return false
			}
		case "Exists":
			if !ok {
				return false
			}
		case "DoesNotExist":
			if ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// Empty reports whether s has no terms (and so matches everything).
func (s *Selector) Empty() bool {
	return s != nil && len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// NamespaceMatch chooses namespaces by name or by label. When both Names and
// Selector are empty it matches every namespace.
type NamespaceMatch struct {
	Names    []string
	Selector *Selector
}

// All reports whether m matches every namespace.
func (m NamespaceMatch) All() bool { return len(m.Names) == 0 && m.Selector == nil }

// Matches reports whether namespace ns is chosen.
func (m NamespaceMatch) Matches(ns *Namespace) bool {
	if m.All() {
		return true
	}
	if len(m.Names) > 0 && contains(m.Names, ns.Name) {
		return true
	}
	return m.Selector.Matches(ns.Labels)
}

// CIDR is an address block with exceptions.
type CIDR struct {
	Prefix netip.Prefix
	Except []netip.Prefix
}

// Contains reports whether a is in the block and not in an exception.
func (c CIDR) Contains(a netip.Addr) bool {
	if !c.Prefix.Contains(a) {
		return false
	}
	for _, e := range c.Except {
		if e.Contains(a) {
			return false
		}
	}
	return true
}

// Peer is the other end of a connection as a rule names it. Exactly one of
// Any, Segment, CIDRs or the workload form (Namespaces and Workloads) is used.
type Peer struct {
	Any     bool
	Segment string // name of a Segment
	CIDRs   []CIDR // addresses, inside or outside the inventory
	// The workload form: workloads chosen by Workloads (nil: all of them) in
	// the namespaces chosen by Namespaces.
	Namespaces NamespaceMatch
	Workloads  *Selector
}

// Service is a set of connections by protocol and destination port. Port 0
// means every port; EndPort > Port makes a range; Name is a named port,
// resolved against the destination workload's declared ports. For ICMP and
// ICMPv6, Type and Code (when not nil) narrow the match.
type Service struct {
	Protocol Protocol
	Port     int
	EndPort  int
	Name     string
	Type     *int
	Code     *int
}

// Rule is one line of a policy: the action for connections from or to Peers
// (empty: any peer) on Services (empty: any service).
type Rule struct {
	ID       string // stable id, recorded in flow and log records
	Name     string
	Action   Action
	Peers    []Peer
	Services []Service
	Log      bool
	Pos      Pos
}

// Subject chooses the workloads a policy applies to: those chosen by
// Workloads (nil or empty: all) in the namespaces chosen by Namespaces.
type Subject struct {
	Namespaces NamespaceMatch
	Workloads  *Selector
	Segment    string // alternatively, the members of a segment
}

// Policy is an ordered list of ingress and egress rules for the workloads it
// applies to, in one tier.
type Policy struct {
	Name      string
	Namespace string // "" for a cluster-wide policy
	Kind      string // the kind it was written as: Policy, NetworkPolicy, AdminNetworkPolicy, …
	Tier      Tier
	Priority  int // lower first inside a tier
	Mode      Mode
	Subject   Subject
	// Isolate[d]: a workload this policy applies to is isolated in direction
	// d: when no rule of this tier decides a connection in that direction,
	// the tier denies it (the semantics of a Kubernetes NetworkPolicy).
	Isolate [2]bool
	Ingress []Rule
	Egress  []Rule
	Pos     Pos
}

// Key names the policy uniquely: kind/namespace/name or kind/name.
func (p *Policy) Key() string {
	if p.Namespace != "" {
		return p.Kind + "/" + p.Namespace + "/" + p.Name
	}
	return p.Kind + "/" + p.Name
}

// Rules returns the rules of one direction.
func (p *Policy) Rules(d Direction) []Rule {
	if d == Egress {
		return p.Egress
	}
	return p.Ingress
}

// Segment is a named group of workloads (by namespace and labels) and of
// addresses (by CIDR). Segments are cluster-wide.
type Segment struct {
	Name       string
	Namespaces NamespaceMatch
	Workloads  *Selector // nil: no workloads (an address-only segment)
	CIDRs      []CIDR
	Pos        Pos
}

// Wall forbids every connection between any two of its segments, in either
// direction. Segments[i] names a Segment.
type Wall struct {
	Name     string
	Segments []string
	Pos      Pos
}

// Dataset is one member of a conflict class.
type Dataset struct {
	Name    string
	Segment string
}

// ConflictClass is a dynamic (Brewer–Nash) wall: a workload of Subjects may
// reach only one of the datasets during its scope; the first access binds
// it. It is decided at run time (the manager's package bindings).
type ConflictClass struct {
	Name     string
	Subjects string // segment of the workloads bound by the class; "" = all workloads
	Datasets []Dataset
	// Scope is how long a binding lasts: "lifecycle" (until the workload
	// instance's registration goes), "permanent" (until an admin clears
	// it), "window" (Window after the first access) or "session" (until
	// an API call ends it, or Window after the first access when set).
	Scope  string
	Window time.Duration // for window (required) and session (optional)
	Pos    Pos
}

// Namespace groups workloads and carries labels that policies select on.
type Namespace struct {
	Name   string
	Labels map[string]string
	Pos    Pos
}

// NamedPort is a port a workload declares under a name.
type NamedPort struct {
	Name     string
	Port     int
	Protocol Protocol
}

// Workload is one container, pod or VM with addresses and labels.
type Workload struct {
	Namespace string
	Name      string
	Labels    map[string]string
	IPs       []netip.Addr
	Ports     []NamedPort
	Host      string
	Pos       Pos
}

// Key is namespace/name.
func (w *Workload) Key() string { return w.Namespace + "/" + w.Name }

// Port resolves a named port for protocol p.
func (w *Workload) Port(name string, p Protocol) (int, bool) {
	for _, np := range w.Ports {
		if np.Name == name && np.Protocol == p {
			return np.Port, true
		}
	}
	return 0, false
}

// Set is everything a policy decision depends on: the inventory (namespaces,
// workloads) and the policy objects.
type Set struct {
	Namespaces      []*Namespace
	Workloads       []*Workload
	Segments        []*Segment
	Policies        []*Policy
	Walls           []*Wall
	ConflictClasses []*ConflictClass
	DecisionRules   []*DecisionRule
}

// Merge appends the objects of o to s.
func (s *Set) Merge(o *Set) {
	s.Namespaces = append(s.Namespaces, o.Namespaces...)
	s.Workloads = append(s.Workloads, o.Workloads...)
	s.Segments = append(s.Segments, o.Segments...)
	s.Policies = append(s.Policies, o.Policies...)
	s.Walls = append(s.Walls, o.Walls...)
	s.ConflictClasses = append(s.ConflictClasses, o.ConflictClasses...)
	s.DecisionRules = append(s.DecisionRules, o.DecisionRules...)
}

// Pos is where an object or field was written.
type Pos = source.Pos
