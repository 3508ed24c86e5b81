// Package flowstest has fakes of the flows package's interfaces: a Sink
// that keeps what it receives (and can be made to fail) and a Resolver
// from fixed tables.
package flowstest

import (
	"context"
	"errors"
	"net/netip"
	"sync"

	"github.com/bulkhead-dev/bulkhead/internal/flows"
)

// Sink is a flows.Sink in memory. It counts a (Stream, Seq) once, as the
// manager must, and records redeliveries and batches out of order.
type Sink struct {
	mu          sync.Mutex
	fail        bool
	seen        map[string]map[uint64]bool
	last        map[string]uint64
	records     []flows.Record
	lost        map[flows.Cause]uint64
	suppressed  map[string]uint64
	batches     int
	redelivered int
	outOfOrder  int
}

// ErrDown is what a failing Sink returns.
var ErrDown = errors.New("flowstest: sink down")

// SetFailing makes Send fail (true) or work again.
func (s *Sink) SetFailing(fail bool) {
	s.mu.Lock()
	s.fail = fail
	s.mu.Unlock()
}

// Send implements flows.Sink.
func (s *Sink) Send(ctx context.Context, b *flows.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return ErrDown
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.seen == nil {
		s.seen, s.last = map[string]map[uint64]bool{}, map[string]uint64{}
		s.lost, s.suppressed = map[flows.Cause]uint64{}, map[string]uint64{}
	}
	if s.seen[b.Stream] == nil {
		s.seen[b.Stream] = map[uint64]bool{}
	}
	if s.seen[b.Stream][b.Seq] {
		s.redelivered++
		return nil
	}
	if b.Seq <= s.last[b.Stream] {
		s.outOfOrder++
	}
	s.seen[b.Stream][b.Seq], s.last[b.Stream] = true, max(s.last[b.Stream], b.Seq)
	s.batches++
	s.records = append(s.records, b.Records...)
	for c, n := range b.Lost {
		s.lost[c] += n
	}
	for k, n := range b.Suppressed {
		s.suppressed[k] += n
	}
	return nil
}

// Received is what the Sink has taken, each batch counted once.
type Received struct {
	Records     []flows.Record
	Lost        map[flows.Cause]uint64
	Suppressed  map[string]uint64
	Batches     int
	Redelivered int // batches sent again after they were taken
	OutOfOrder  int // batches that came after one with a higher Seq
}

// Received returns a copy of what the Sink has taken.
func (s *Sink) Received() Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := Received{Records: append([]flows.Record(nil), s.records...), Lost: map[flows.Cause]uint64{},
		Suppressed: map[string]uint64{}, Batches: s.batches, Redelivered: s.redelivered, OutOfOrder: s.outOfOrder}
	for c, n := range s.lost {
		r.Lost[c] = n
	}
	for k, n := range s.suppressed {
		r.Suppressed[k] = n
	}
	return r
}

// Resolver is a flows.Resolver from fixed tables.
type Resolver struct {
	mu        sync.Mutex
	Endpoints map[netip.Addr]flows.Endpoint
	// Rules names the allowing rule by destination address and port.
	Rules map[netip.AddrPort]string
}

// Endpoint implements flows.Resolver.
func (r *Resolver) Endpoint(a netip.Addr) (flows.Endpoint, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.Endpoints[a]
	return e, ok
}

// Rule implements flows.Resolver.
func (r *Resolver) Rule(src, dst netip.Addr, proto uint8, dport uint16) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.Rules[netip.AddrPortFrom(dst, dport)]
}

var _ flows.Sink = (*Sink)(nil)
var _ flows.Resolver = (*Resolver)(nil)
