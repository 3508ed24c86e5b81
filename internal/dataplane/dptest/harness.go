// Package dptest is the conformance suite of dataplane.Dataplane: policy
// cases written as policy documents, a differential test that runs random
// worlds through a dataplane and through the reference evaluator, and two
// harnesses that give the suite a host to test — Userspace (the reference
// dataplane, simulated packets, no root) and Kernel (throwaway network
// namespaces, real sockets, a real dataplane in the host namespace).
//
// The suite is the specification: an implementation that fails a case is
// wrong, whichever way it fails, unless the reference evaluator
// (policy.Engine and policy.Conntrack) disagrees with the case, which the
// suite checks on every expectation.
package dptest

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Outcome is what a connection attempt saw.
type Outcome int

// The outcomes of a connection attempt.
const (
	// Connected: the connection was set up and one round trip passed
	// (for a spoofed datagram: the destination received it).
	Connected Outcome = iota + 1
	// Refused: a TCP reset or an ICMP unreachable came back (the policy's
	// reject).
	Refused
	// Dropped: nothing came back within the timeout (deny, escalate, or a
	// wall).
	Dropped
)

func (o Outcome) String() string {
	switch o {
	case Connected:
		return "connected"
	case Refused:
		return "refused"
	case Dropped:
		return "dropped"
	}
	return "outcome(?)"
}

// OutcomeOf is the outcome a connection must see when the dataplane does
// a (see dataplane.Enforced).
func OutcomeOf(a policy.Action) Outcome {
	switch a {
	case policy.Allow:
		return Connected
	case policy.Reject:
		return Refused
	}
	return Dropped
}

// Endpoint is a workload (or an outside host) the suite asks a harness to
// create. Name is namespace/name.
type Endpoint struct {
	Name  string
	Addrs []netip.Addr
}

// Try is one connection attempt.
type Try struct {
	From     string // an endpoint's name
	To       netip.Addr
	Protocol policy.Protocol
	Port     int // TCP, UDP, SCTP; ICMP and ICMPv6 send an echo request
	// Spoof, when valid, sends one UDP datagram from this source address
	// instead of From's own; Connected then means the destination
	// received it.
	Spoof netip.Addr
	// Timeout for "dropped"; 0 is the harness's default.
	Timeout time.Duration
}

// Harness makes hosts for the suite.
type Harness interface {
	Name() string
	// NewHost makes a fresh host with its own dataplane, removed when t
	// ends.
	NewHost(t *testing.T) Host
}

// Host is one host under test. Its methods may be called from several
// goroutines at once.
type Host interface {
	Dataplane() dataplane.Dataplane
	// Attach creates a workload and connects it to the host; it returns
	// the host-side interface name (for Desired.Attachments).
	Attach(ctx context.Context, e Endpoint) (iface string, err error)
	// AddOutside creates an address outside the inventory that reaches
	// the workloads through the host, on an interface that is not an
	// attachment. ErrUnsupported when the harness cannot.
	AddOutside(ctx context.Context, e Endpoint) error
	// Try makes one new connection. The error is the harness's own
	// failure, never the dataplane's verdict; detail says what was seen.
	Try(ctx context.Context, tr Try) (o Outcome, detail string, err error)
	// Open sets up a connection (as Try) and keeps it open.
	Open(ctx context.Context, tr Try) (Conn, error)
	// Supports reports nil when the host can carry p, else why not.
	Supports(p policy.Protocol) error
}

// Conn is an open connection.
type Conn interface {
	// Exchange makes one more round trip.
	Exchange(ctx context.Context) (Outcome, error)
	Close() error
}

// LogReader is implemented by hosts that can show what the dataplane
// logged (logged rules and observe-mode "would deny").
type LogReader interface {
	Logs() []dataplane.LogEntry
}

// ErrUnsupported is returned by a host that cannot do what was asked.
var ErrUnsupported = errors.New("dptest: not supported by this harness")
