// Package flows collects, on an agent, every connection as the kernel saw
// it: conntrack events for the connections the dataplane let through and
// the dataplane's NFLOG records for the packets it denied, rejected,
// escalated, logged or would have denied (observe mode). It turns them
// into Records, batches them, and hands the batches to a Sink; while the
// Sink fails, batches wait in a bounded spool on disk and are delivered in
// order when it returns, also after a restart. Whatever cannot be kept is
// counted by cause, and the counts travel in the batches: nothing is lost
// silently. docs/flows.md describes the record, the causes of loss and the
// spool.
package flows

import (
	"context"
	"net/netip"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
)

// Verdict is what the dataplane did with a connection. The values are
// the kinds of the dataplane's log records (nft.LogAllow and the others),
// so that a record's verdict is the word the kernel logged.
type Verdict string

// The verdicts.
const (
	Allow     Verdict = "allow"      // let through (conntrack saw it)
	Deny      Verdict = "deny"       // dropped by a rule (or a tier default)
	Reject    Verdict = "reject"     // refused with a TCP reset or ICMP error
	Escalate  Verdict = "escalate"   // held for the manager's decision
	WouldDeny Verdict = "would-deny" // observe mode: a rule would deny; let through
	Wall      Verdict = "wall"       // dropped by a wall (Rule names it)
	Spoofed   Verdict = "spoofed"    // dropped: source address not the interface's workload's
	NoEntry   Verdict = "no-entry"   // dropped: no table entry (fail closed)
)

// Source says where a Record came from.
type Source string

const (
	FromConntrack Source = "conntrack" // a DESTROY event: a whole connection
	FromNFLOG     Source = "nflog"     // log records of packets the kernel dropped (or logged)
)

// Endpoint is one end of a flow: its address and port and, when the
// Resolver knows the address, the workload that holds it. An empty
// Workload is an address outside the inventory.
type Endpoint struct {
	Addr      netip.Addr `json:"addr"`
	Port      uint16     `json:"port,omitempty"`
	Workload  string     `json:"workload,omitempty"`
	Namespace string     `json:"namespace,omitempty"`
	Identity  uint32     `json:"identity,omitempty"`
}

// Count is packets and bytes in one direction.
type Count struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Hit is one kind of NFLOG record that named a flow: its kind (a
// Verdict) and the rule id or wall name of the record's prefix.
type Hit struct {
	Kind Verdict `json:"kind"`
	ID   string  `json:"id,omitempty"`
}

// Record is one flow. For a connection conntrack saw (Source
// FromConntrack), Start and End are the connection's (End is when TCP
// began to close, else when conntrack removed the entry) and Orig and
// Reply count both directions. For packets the kernel dropped (Source
// FromNFLOG), a Record aggregates the log records of one 5-tuple, verdict
// and rule within one batch: Start and End are the first and last record,
// Orig counts the logged packets and their IP lengths, Reply is zero.
type Record struct {
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Src     Endpoint  `json:"src"`
	Dst     Endpoint  `json:"dst"`
	Proto   uint8     `json:"proto"`
	Verdict Verdict   `json:"verdict"`
	// Rule is the rule that decided (its id), or the wall's name for
	// Wall; empty for Spoofed and NoEntry, and for an allowed connection
	// that no log record and no Resolver named.
	Rule   string `json:"rule,omitempty"`
	Hits   []Hit  `json:"hits,omitempty"`
	Orig   Count  `json:"orig"`
	Reply  Count  `json:"reply"`
	Source Source `json:"source"`
}

// Cause is why something was lost. Counts by cause travel in Batch.Lost.
type Cause string

// The causes of loss (docs/flows.md says what each counts and when it
// happens).
const (
	// LostConntrackENOBUFS counts overruns of the conntrack event socket
	// (each is at least one NEW or UPDATE event; DESTROY events are
	// redelivered by the kernel, so no connection's record is lost).
	LostConntrackENOBUFS Cause = "conntrack-enobufs"
	// LostNFLOGENOBUFS counts overruns of the NFLOG socket (the records
	// lost are counted exactly by LostNFLOGGap).
	LostNFLOGENOBUFS Cause = "nflog-enobufs"
	// LostNFLOGGap counts NFLOG records the kernel built but that never
	// arrived (by the records' sequence numbers).
	LostNFLOGGap Cause = "nflog-gap"
	// LostBufferFull counts NFLOG records dropped because the collector's
	// in-memory buffer was full.
	LostBufferFull Cause = "buffer-full"
	// LostSpoolFull counts records refused because the spool was full.
	LostSpoolFull Cause = "spool-full"
	// LostSpoolError counts records that could not be written to the
	// spool (a disk error).
	LostSpoolError Cause = "spool-error"
	// LostUnparsed counts NFLOG records whose prefix or packet could
	// not be read.
	LostUnparsed Cause = "unparsed"
)

// Batch is what the collector hands to a Sink: the records of about one
// flush interval and what was lost meanwhile. Lost and Suppressed are the
// counts since the previous batch of the stream, so a receiver sums them;
// a batch is identified by (Stream, Seq), so a redelivered batch must be
// counted once. Seq increases within a stream, with gaps.
type Batch struct {
	Stream  string           `json:"stream"`
	Seq     uint64           `json:"seq"`
	Host    string           `json:"host,omitempty"`
	Sealed  time.Time        `json:"sealed"`
	Records []Record         `json:"records,omitempty"`
	Lost    map[Cause]uint64 `json:"lost,omitempty"`
	// Suppressed counts, by "kind id" of a log record ("deny
	// Policy/app/x/ingress/y", "spoofed"), the packets the kernel decided
	// but whose record its rate limit suppressed: the rule's kernel
	// counter's rise minus the records that arrived. Known only with a
	// CounterSource, and only for records the collector has seen once.
	Suppressed map[string]uint64 `json:"suppressed,omitempty"`
}

// Sink receives batches; the agent's manager client implements it over
// its mutual-TLS connection.
//
// Send delivers b and returns nil once the receiver has it. It is called
// from one goroutine, in Seq order; after an error the same batch is sent
// again (possibly after a restart of the agent), so a receiver must treat
// a (Stream, Seq) it has seen as delivered and not count it again. Send
// must honour ctx.
type Sink interface {
	Send(ctx context.Context, b *Batch) error
}

// Resolver tells the collector what its compiled state knows about an
// address and a connection; the agent implements it. It is called from
// one goroutine, but concurrently with the agent's updates.
type Resolver interface {
	// Endpoint fills in the workload, namespace and identity of the
	// address's holder; ok false: an address outside the inventory.
	Endpoint(addr netip.Addr) (e Endpoint, ok bool)
	// Rule names the rule that allows a connection that conntrack saw
	// and that no log record named ("" if unknown).
	Rule(src, dst netip.Addr, proto uint8, dport uint16) string
}

// CounterSource reads the dataplane's counters (*nft.Dataplane does), so
// that the collector can tell how many log records the kernel's rate
// limit suppressed.
type CounterSource interface {
	Counters(ctx context.Context) (dataplane.Counters, error)
}
