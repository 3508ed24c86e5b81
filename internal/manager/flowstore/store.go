// Package flowstore keeps the flows that agents send the manager, in an
// embedded Pebble database (an LSM tree: writes are appends, so 50,000
// records a second cost little, and keys ordered by time make the newest
// flows and an age cut-off one range each). A flow is stored under its
// end time, with index entries by workload and by namespace, bucketed by
// hour, so that one workload's flows over a time range are read without
// touching the others'. Batches are deduplicated by (host, stream, seq):
// an agent delivers each stream's batches in Seq order, so a seq at or
// below the highest seen is a redelivery and is not counted again.
// Retention drops the oldest flows first, by age and by size, and counts
// what it dropped. docs/flows.md says why Pebble and not bbolt.
package flowstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/flows"
)

// Config configures a Store. Dir is required.
type Config struct {
	Dir string
	// MaxAge drops flows older than this (default 7 days); MaxBytes drops
	// the oldest flows while the store is larger (default 10 GiB).
	MaxAge   time.Duration
	MaxBytes int64
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
}

// Store is the flow store. Its methods are safe for concurrent use; Add
// calls are serialized.
type Store struct {
	cfg Config
	db  *pebble.DB
	log *slog.Logger

	mu     sync.Mutex // serializes Add and Retain; guards counts, nextID, closed
	closed bool
	counts api.FlowCounts
	nextID uint64

	subMu sync.Mutex
	subs  map[*follower]struct{}
}

// state is what the 'c' key holds.
type state struct {
	Counts api.FlowCounts `json:"counts"`
	NextID uint64         `json:"next_id"`
}

// Open opens (or creates) the store in cfg.Dir.
func Open(cfg Config) (*Store, error) {
	if cfg.Dir == "" {
		return nil, errors.New("flowstore: Config.Dir is required")
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 7 * 24 * time.Hour
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 10 << 30
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	db, err := pebble.Open(cfg.Dir, &pebble.Options{Logger: quietLogger{}})
	if err != nil {
		return nil, fmt.Errorf("flowstore: open %s: %w", cfg.Dir, err)
	}
	s := &Store{cfg: cfg, db: db, log: cfg.Logger.With("component", "flowstore"), nextID: 1,
		subs: map[*follower]struct{}{}}
	v, closer, err := db.Get([]byte{tabCounts})
	switch {
	case err == nil:
		var st state
		err = json.Unmarshal(v, &st)
		closer.Close()
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("flowstore: read counts in %s: %w", cfg.Dir, err)
		}
		s.counts, s.nextID = st.Counts, max(st.NextID, 1)
	case errors.Is(err, pebble.ErrNotFound):
	default:
		db.Close()
		return nil, fmt.Errorf("flowstore: read counts in %s: %w", cfg.Dir, err)
	}
	return s, nil
}

// Close closes the store; followers' channels are closed. A second Close
// does nothing.
func (s *Store) Close() error {
	s.subMu.Lock()
	for f := range s.subs {
		close(f.ch)
		delete(s.subs, f)
	}
	s.subMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("flowstore: close: %w", err)
	}
	return nil
}

// Add stores a batch that host sent. Its records are stored as host's
// whatever b.Host says (the caller has checked it); its Lost and
// Suppressed counts are added to host's. A batch whose (stream, seq) the
// store has seen from host is a redelivery: Add counts it as a duplicate
// and returns false. The batch is durable when Add returns.
func (s *Store) Add(ctx context.Context, host string, b *flows.Batch) (added bool, err error) {
	if host == "" || b.Stream == "" {
		return false, fault.New(fault.Invalid, nil, "flow batch: host and stream must not be empty")
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, fault.New(fault.Unavailable, nil, "flowstore: closed")
	}
	sk := streamKey(host, b.Stream)
	last, err := s.lastSeq(sk)
	if err != nil {
		return false, err
	}
	if last != 0 && b.Seq <= last {
		s.counts.Duplicates++
		return false, nil
	}
	counts := cloneCounts(s.counts)
	nextID := s.nextID
	wb := s.db.NewBatch()
	defer wb.Close()
	stored := make([]api.Flow, 0, len(b.Records))
	for _, r := range b.Records {
		f := api.Flow{ID: nextID, Host: host, Record: r}
		nextID++
		if err := putFlow(wb, &f); err != nil {
			return false, err
		}
		if r.Rule != "" {
			h := counts.Rules[r.Rule]
			h.Flows++
			counts.Rules[r.Rule] = h
		}
		stored = append(stored, f)
	}
	addCounts(&counts, host, b)
	counts.Stored += uint64(len(b.Records))
	counts.Batches++
	if err := wb.Set(sk, binary.BigEndian.AppendUint64(nil, b.Seq), nil); err != nil {
		return false, fmt.Errorf("flowstore: add batch: %w", err)
	}
	if err := putState(wb, counts, nextID); err != nil {
		return false, err
	}
	if err := wb.Commit(pebble.Sync); err != nil {
		return false, fault.New(fault.Unavailable, nil, "flowstore: write batch %s/%d of host %s: %v", b.Stream, b.Seq, host, err)
	}
	s.counts, s.nextID = counts, nextID
	s.publish(stored)
	return true, nil
}

func (s *Store) lastSeq(sk []byte) (uint64, error) {
	v, closer, err := s.db.Get(sk)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fault.New(fault.Unavailable, nil, "flowstore: read stream: %v", err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fault.New(fault.Internal, nil, "flowstore: stream record of %d bytes, want 8", len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// flowTime is when a flow is filed: its end, else its start.
func flowTime(r *flows.Record) time.Time {
	if !r.End.IsZero() {
		return r.End
	}
	return r.Start
}

func putFlow(wb *pebble.Batch, f *api.Flow) error {
	v, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("flowstore: encode flow: %w", err)
	}
	t := flowTime(&f.Record)
	if err := wb.Set(flowKey(t, f.ID), v, nil); err != nil {
		return fmt.Errorf("flowstore: add flow: %w", err)
	}
	for _, w := range names(f.Src.Workload, f.Dst.Workload) {
		if err := wb.Set(indexKey(tabWorkload, t, w, f.ID), nil, nil); err != nil {
			return fmt.Errorf("flowstore: add flow: %w", err)
		}
	}
	for _, n := range names(f.Src.Namespace, f.Dst.Namespace) {
		if err := wb.Set(indexKey(tabNamespace, t, n, f.ID), nil, nil); err != nil {
			return fmt.Errorf("flowstore: add flow: %w", err)
		}
	}
	return nil
}

// names is the distinct non-empty names among a and b.
func names(a, b string) []string {
	switch {
	case a == "" && b == "":
		return nil
	case a == "" || a == b:
		return []string{b}
	case b == "":
		return []string{a}
	}
	return []string{a, b}
}

func putState(wb *pebble.Batch, c api.FlowCounts, nextID uint64) error {
	v, err := json.Marshal(state{Counts: c, NextID: nextID})
	if err != nil {
		return fmt.Errorf("flowstore: encode counts: %w", err)
	}
	if err := wb.Set([]byte{tabCounts}, v, nil); err != nil {
		return fmt.Errorf("flowstore: write counts: %w", err)
	}
	return nil
}

func addCounts(c *api.FlowCounts, host string, b *flows.Batch) {
	for cause, n := range b.Lost {
		if c.Lost[host] == nil {
			c.Lost[host] = map[flows.Cause]uint64{}
		}
		c.Lost[host][cause] += n
	}
	for key, n := range b.Suppressed {
		if c.Suppressed[host] == nil {
			c.Suppressed[host] = map[string]uint64{}
		}
		c.Suppressed[host][key] += n
		if _, id, ok := strings.Cut(key, " "); ok && id != "" {
			h := c.Rules[id]
			h.Suppressed += n
			c.Rules[id] = h
		}
	}
}

// Counts is a copy of the counts.
func (s *Store) Counts() api.FlowCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneCounts(s.counts)
}

func cloneCounts(c api.FlowCounts) api.FlowCounts {
	out := c
	out.Lost = map[string]map[flows.Cause]uint64{}
	for h, m := range c.Lost {
		out.Lost[h] = map[flows.Cause]uint64{}
		for k, v := range m {
			out.Lost[h][k] = v
		}
	}
	out.Suppressed = map[string]map[string]uint64{}
	for h, m := range c.Suppressed {
		out.Suppressed[h] = map[string]uint64{}
		for k, v := range m {
			out.Suppressed[h][k] = v
		}
	}
	out.Rules = map[string]api.RuleHits{}
	for k, v := range c.Rules {
		out.Rules[k] = v
	}
	return out
}

// quietLogger keeps Pebble's informational lines out of the manager's log.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Errorf(format string, args ...any) {
	slog.Error(fmt.Sprintf(format, args...), "component", "flowstore")
}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf("flowstore: pebble: "+format, args...))
}
