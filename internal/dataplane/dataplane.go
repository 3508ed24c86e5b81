// Package dataplane defines what a host's enforcement backend must do: make
// a compiled desired state (internal/compile) the state in force, atomically,
// and account for it. Two implementations pass one conformance suite
// (internal/dataplane/dptest): the kernel one in internal/dataplane/nft,
// and a userspace one in this package that judges packets with the
// reference evaluator (policy.Conntrack), for tests that run without root.
//
// Managers convert, drivers reconcile: the policy engine resolves
// selectors into identities and tables before a Dataplane sees anything;
// a Dataplane never evaluates a selector.
package dataplane

import (
	"context"
	"errors"
	"net/netip"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Attachment is one workload interface on this host. Packets that arrive
// from Interface must carry one of Addrs as their source (anti-spoofing);
// anything else is dropped and counted.
type Attachment struct {
	Workload  string // namespace/name
	Interface string // host-side interface name
	Addrs     []netip.Addr
}

// Desired is what one host must enforce.
type Desired struct {
	// State is the compiled tables for this host; nil enforces nothing but
	// anti-spoofing (every connection allowed).
	State *compile.State
	// Set is the policy set State was compiled from. The kernel dataplane
	// ignores it; the userspace one judges packets with it.
	Set *policy.Set
	// Attachments lists the local workload interfaces.
	Attachments []Attachment
}

// Counter counts what one rule (or the anti-spoofing check) decided since
// the rule first came into force on this host.
type Counter struct {
	Packets, Bytes uint64
}

// Counters are what a dataplane has counted.
type Counters struct {
	// Rules is keyed by rule id (policy.RuleRef.ID).
	Rules map[string]Counter
	// Spoofed counts packets dropped because their source address was not
	// their interface's workload's.
	Spoofed Counter
	// Walls counts connections denied by a wall, by wall name.
	Walls map[string]Counter
}

// Dataplane enforces a host's desired state.
//
// Apply is atomic: when it returns nil, the kernel (or the userspace
// model) enforces d, and there was no moment in which neither the previous
// state nor d was in force; when it returns an error, the previous state
// is still in force, whole. Established connections that d still allows
// survive an Apply. Apply is not safe for concurrent use; the other
// methods are safe to call concurrently with it.
type Dataplane interface {
	Apply(ctx context.Context, d Desired) error
	// Counters reads the counters of the state in force.
	Counters(ctx context.Context) (Counters, error)
	// Close releases the dataplane's resources and leaves enforcement in
	// place (a restarted agent adopts it). Removing what a dataplane
	// created is a separate, explicit operation of each implementation.
	Close() error
}

// ErrClosed is returned by a Dataplane used after Close.
var ErrClosed = errors.New("dataplane: closed")
