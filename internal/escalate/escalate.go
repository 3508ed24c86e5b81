// Package escalate is the agent's side of the escalate path: a Holder reads
// the first packet of every connection that the dataplane queues to
// NFQUEUE (a rule whose action is escalate), holds it while a Decider
// answers, and gives the kernel the verdict. It knows nothing of the
// manager or of the compiled state: the agent gives it a Resolver (who are
// the two ends of this connection) and a Decider (may it proceed).
//
// Every way a question can go wrong ends in a drop (fail closed), counted
// by cause: the queue full, the Decider failing or gone, the Holder
// stopped, too many connections held. docs/escalate.md has the design:
// holding, dedupe, timeouts, fairness and remembered decisions.
package escalate

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// Verdict is what the kernel does with a held connection. The zero value
// denies.
type Verdict uint8

const (
	Deny  Verdict = iota // drop the packet: the connection does not open
	Allow                // let the packet go on
)

func (v Verdict) String() string {
	if v == Allow {
		return "allow"
	}
	return "deny"
}

// Conn is one connection as its first packet shows it.
type Conn struct {
	Proto            uint8 // IP protocol: 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, …
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16 // TCP, UDP, UDP-Lite, SCTP, DCCP; for an ICMP echo, SrcPort is its identifier
	ICMPType         uint8  // ICMP and ICMPv6 only
	ICMPCode         uint8
}

func (c Conn) String() string {
	switch {
	case hasPorts(c.Proto):
		return fmt.Sprintf("%s %s → %s", protoName(c.Proto), netip.AddrPortFrom(c.Src, c.SrcPort), netip.AddrPortFrom(c.Dst, c.DstPort))
	case c.Proto == protoICMP || c.Proto == protoICMPv6:
		return fmt.Sprintf("%s %s → %s type %d code %d id %d", protoName(c.Proto), c.Src, c.Dst, c.ICMPType, c.ICMPCode, c.SrcPort)
	}
	return fmt.Sprintf("%s %s → %s", protoName(c.Proto), c.Src, c.Dst)
}

// Endpoint is one end of a connection as the agent knows it. A zero
// Identity means that the agent does not know this end (not a workload
// of its compiled state): a Decider should deny what it cannot judge.
type Endpoint struct {
	Addr      netip.Addr
	Namespace string // the workload's namespace and name; "" outside any workload
	Name      string
	Labels    map[string]string
	Identity  uint32 // the dataplane's identity of the address (0: unknown)
	Image     string // the image digest, when the runtime told it
}

// Ends is what a Resolver says of a connection: both ends, and the terms of
// the rule that escalated it.
type Ends struct {
	Src, Dst Endpoint
	// Rule is the id of the rule (or the conflict class) that escalated it.
	Rule string
	// Timeout is how long the connection may wait for a decision (0: the
	// Holder's Options.Timeout); then it gets OnTimeout (zero: Deny).
	Timeout   time.Duration
	OnTimeout Verdict
}

// Resolver names the two ends of a connection. The agent implements it from
// its compiled state (workloads, identities, labels, images, the rule that
// escalates). It is called once per held connection, concurrently, before
// the Decider; it should answer in microseconds and must not block on the
// network. An error denies the connection and is counted
// (CauseResolver).
type Resolver interface {
	Resolve(ctx context.Context, c Conn) (Ends, error)
}

// Request is one question to a Decider.
type Request struct {
	Conn     Conn
	Src, Dst Endpoint
	Rule     string
	Held     time.Time // when the connection's first packet was held
	Deadline time.Time // when it gets its rule's OnTimeout verdict
}

// Decision is a Decider's answer.
type Decision struct {
	Verdict Verdict
	// Remember, when positive, answers the same Key (source identity,
	// destination address, protocol, port) with Verdict for this long
	// without asking. Zero: this connection only. It is ignored when
	// the source's identity is unknown.
	Remember time.Duration
	// Reason says who or what decided (a rule, a person), for the record.
	Reason string
}

// Decider decides held connections. The manager's decision engine will
// implement it (through the agent's client). Decide is called
// concurrently, once per held connection (never for a retransmission of
// one already asked), at most Options.MaxPending at once, and for one
// source address at most Options.MaxPendingPerSource or half of
// MaxPending, whichever is more. It may block as long
// as a person takes; ctx ends at the request's Deadline or when the
// Holder closes, and a Decider should return then. An error denies the
// connection (fail closed) and is counted (CauseDecider).
type Decider interface {
	Decide(ctx context.Context, r Request) (Decision, error)
}

// Key is what a remembered decision answers: connections from one source
// identity to one destination address, protocol and destination port (0
// for protocols without ports).
type Key struct {
	SrcIdentity uint32
	Dst         netip.Addr
	Proto       uint8
	Port        uint16
}

func (k Key) String() string {
	return fmt.Sprintf("identity %d → %s %s/%d", k.SrcIdentity, k.Dst, protoName(k.Proto), k.Port)
}

// Remembered is a decision kept for its Key until Expires.
type Remembered struct {
	Key     Key
	Verdict Verdict
	Expires time.Time
	Reason  string
}

// Offload is the seam to a dataplane that can hold remembered decisions as
// kernel entries, so that their connections are not queued at all (the
// nftables dataplane will implement it with a set keyed like Key, whose
// elements carry their own timeout; docs/escalate.md). Install is called
// when a decision is remembered, Withdraw when it is revoked (expiry is the
// kernel entry's own timeout). Both are called from the Holder's
// goroutines, concurrently, and must be idempotent. The Holder keeps
// answering from its own memory whatever they return: an Install error is
// counted, a Withdraw error is returned by Revoke.
type Offload interface {
	Install(ctx context.Context, r Remembered) error
	Withdraw(ctx context.Context, k Key) error
}

// Cause is why a packet was dropped without a decision (failed closed).
type Cause string

const (
	CauseQueueFull   Cause = "queue-full"      // the kernel's queue was full: dropped before the Holder saw it
	CauseUndelivered Cause = "undelivered"     // the kernel could not deliver it to the Holder's socket (its buffer full)
	CausePendingFull Cause = "pending-full"    // Options.MaxPending connections were held already
	CauseSourceLimit Cause = "source-limit"    // its source held its share already (Options.MaxPendingPerSource), and half of MaxPending were held
	CauseResolver    Cause = "resolver-failed" // the Resolver returned an error
	CauseDecider     Cause = "decider-failed"  // the Decider returned an error (failing, unreachable)
	CauseStopped     Cause = "stopped"         // the Holder was closed while it was held
	CauseUnparsable  Cause = "unparsable"      // not an IPv4 or IPv6 packet it could read
	CauseVerdict     Cause = "verdict-failed"  // the verdict could not be sent (the kernel drops it when the socket closes)
)

// Causes lists every Cause, in the order reports show them.
var Causes = []Cause{CauseQueueFull, CauseUndelivered, CausePendingFull, CauseSourceLimit,
	CauseResolver, CauseDecider, CauseStopped, CauseUnparsable, CauseVerdict}

// Counters are what a Holder has counted since it opened. Every packet it
// read is answered exactly once, and counted once among Allowed, Denied,
// Replaced and FailedClosed; Queued is their sum plus Pending, leaving
// out CauseQueueFull and CauseUndelivered (packets the kernel dropped
// before the Holder could read them) and CauseVerdict (counted on top of
// the verdict that could not be sent).
type Counters struct {
	Queued uint64 // packets read from the queue
	Asked  uint64 // questions to the Decider

	// Connections answered, and how.
	Allowed        uint64 // packets let through (by a decision, a remembered one, a timeout, or as a copy of a decided connection)
	Denied         uint64 // packets dropped by a decision (the same ways)
	FromMemory     uint64 // of those, answered by a remembered decision without asking
	Settled        uint64 // of those, copies of a connection already decided, answered with its verdict
	TimedOut       uint64 // of those, given their rule's OnTimeout verdict
	Replaced       uint64 // older copies (retransmissions) of a held connection, dropped when a newer arrived
	FailedClosed   map[Cause]uint64
	Pending        int // connections held now
	Remembered     int // remembered decisions now
	OffloadFailed  uint64
	RememberedFull uint64 // decisions not remembered because Options.MaxRemembered were
}

const (
	protoICMP    = 1
	protoTCP     = 6
	protoUDP     = 17
	protoDCCP    = 33
	protoICMPv6  = 58
	protoSCTP    = 132
	protoUDPLite = 136
)

func hasPorts(p uint8) bool {
	switch p {
	case protoTCP, protoUDP, protoDCCP, protoSCTP, protoUDPLite:
		return true
	}
	return false
}

func protoName(p uint8) string {
	switch p {
	case protoTCP:
		return "tcp"
	case protoUDP:
		return "udp"
	case protoICMP:
		return "icmp"
	case protoICMPv6:
		return "icmpv6"
	case protoSCTP:
		return "sctp"
	case protoDCCP:
		return "dccp"
	case protoUDPLite:
		return "udplite"
	}
	return fmt.Sprintf("proto-%d", p)
}
