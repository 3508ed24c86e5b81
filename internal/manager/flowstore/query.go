package flowstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/flows"
)

// MaxLimit bounds the flows one query returns; DefaultLimit is what it
// returns without a limit.
const (
	MaxLimit     = 10000
	DefaultLimit = 1000
)

// Query chooses flows. Every field that is set must match: Workload and
// Namespace either end's, Port the destination's, Host the sender's.
// Since is inclusive, Until exclusive (zero: no bound). Limit bounds the
// answer (DefaultLimit if 0, at most MaxLimit): the newest that match.
type Query struct {
	Workload, Namespace string
	Host                string
	Verdict             flows.Verdict
	Rule                string
	Port                uint16
	Since, Until        time.Time
	Limit               int
}

// Match says whether f is one the query chooses, its time range aside.
func (q *Query) Match(f *api.Flow) bool {
	switch {
	case q.Workload != "" && f.Src.Workload != q.Workload && f.Dst.Workload != q.Workload:
	case q.Namespace != "" && f.Src.Namespace != q.Namespace && f.Dst.Namespace != q.Namespace:
	case q.Host != "" && f.Host != q.Host:
	case q.Verdict != "" && f.Verdict != q.Verdict:
	case q.Rule != "" && f.Rule != q.Rule:
	case q.Port != 0 && f.Dst.Port != q.Port:
	default:
		return true
	}
	return false
}

// Query returns the newest flows that match q, oldest first, and whether
// more matched.
func (s *Store) Query(ctx context.Context, q Query) (out []api.Flow, truncated bool, err error) {
	if q.Limit <= 0 {
		q.Limit = DefaultLimit
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, false, fault.New(fault.Unavailable, nil, "flowstore: closed")
	}
	if q.Limit > MaxLimit {
		return nil, false, fault.New(fault.Invalid, nil, "limit %d: at most %d", q.Limit, MaxLimit)
	}
	since, until := q.Since, q.Until
	if oldest := s.cfg.Now().Add(-s.cfg.MaxAge); since.Before(oldest) {
		since = oldest // nothing older is kept; the index need not be read there
	}
	if until.IsZero() {
		until = time.Unix(0, math.MaxInt64)
	}
	if !since.Before(until) {
		return nil, false, nil
	}
	collect := func(f *api.Flow) bool {
		if !q.Match(f) {
			return true
		}
		if len(out) == q.Limit {
			truncated = true
			return false
		}
		out = append(out, *f)
		return true
	}
	switch {
	case q.Workload != "":
		err = s.scanIndex(ctx, tabWorkload, q.Workload, since, until, collect)
	case q.Namespace != "":
		err = s.scanIndex(ctx, tabNamespace, q.Namespace, since, until, collect)
	default:
		err = s.scanFlows(ctx, timeBound(since), timeBound(until), collect)
	}
	if err != nil {
		return nil, false, err
	}
	slices.Reverse(out)
	return out, truncated, nil
}

// scanFlows calls fn with the flows in [lo, hi), newest first, until it
// returns false.
func (s *Store) scanFlows(ctx context.Context, lo, hi []byte, fn func(*api.Flow) bool) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return fault.New(fault.Unavailable, nil, "flowstore: read flows: %v", err)
	}
	defer it.Close()
	for ok := it.Last(); ok; ok = it.Prev() {
		if err := ctx.Err(); err != nil {
			return err
		}
		var f api.Flow
		if err := json.Unmarshal(it.Value(), &f); err != nil {
			return fmt.Errorf("flowstore: decode flow %x: %w", it.Key(), err)
		}
		if !fn(&f) {
			return nil
		}
	}
	return it.Error()
}

// scanIndex calls fn with the flows of one name in an index over
// [since, until), newest first, reading only the hours they span.
func (s *Store) scanIndex(ctx context.Context, tab byte, name string, since, until time.Time, fn func(*api.Flow) bool) error {
	lastBucket := bucketOf(until.Add(-1))
	if now := bucketOf(s.cfg.Now().Add(24 * time.Hour)); lastBucket > now {
		lastBucket = now // a far "until": no flow is filed beyond tomorrow's clock
	}
	first := bucketOf(since)
	for b := lastBucket; b >= first && b <= lastBucket; b-- {
		p := indexPrefix(tab, b, name)
		lo := timeSuffix(p, since)
		hi := timeSuffix(p, until)
		more, err := s.scanBucket(ctx, lo, hi, fn)
		if err != nil || !more {
			return err
		}
		if b == 0 {
			break
		}
	}
	return nil
}

func timeSuffix(prefix []byte, t time.Time) []byte {
	k := timeBound(t)
	return append(slices.Clip(prefix), k[1:]...)
}

func (s *Store) scanBucket(ctx context.Context, lo, hi []byte, fn func(*api.Flow) bool) (more bool, err error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return false, fault.New(fault.Unavailable, nil, "flowstore: read index: %v", err)
	}
	defer it.Close()
	for ok := it.Last(); ok; ok = it.Prev() {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		fk := flowKeyOfIndex(it.Key())
		v, closer, err := s.db.Get(fk)
		if errors.Is(err, pebble.ErrNotFound) {
			continue // dropped by retention; its hour's index goes later
		}
		if err != nil {
			return false, fault.New(fault.Unavailable, nil, "flowstore: read flow: %v", err)
		}
		var f api.Flow
		err = json.Unmarshal(v, &f)
		closer.Close()
		if err != nil {
			return false, fmt.Errorf("flowstore: decode flow %x: %w", fk, err)
		}
		if !fn(&f) {
			return false, nil
		}
	}
	return true, it.Error()
}
