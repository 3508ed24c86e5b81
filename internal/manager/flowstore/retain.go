package flowstore

import (
	"context"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Retain drops, oldest first, the flows older than MaxAge and then, while
// the store is larger than MaxBytes, the oldest part of what is left, and
// counts them (Expired, Evicted). The manager calls it every minute.
func (s *Store) Retain(ctx context.Context) (expired, evicted uint64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cut := s.cfg.Now().Add(-s.cfg.MaxAge)
	if expired, err = s.dropBefore(ctx, cut); err != nil {
		return 0, 0, err
	}
	s.counts.Expired += expired
	for range 8 { // each round drops a share; bounded, the next call goes on
		// The log holds what the memtable holds; flushed, the tables
		// alone are what the flows take.
		if err := s.db.Flush(); err != nil {
			return expired, evicted, fmt.Errorf("flowstore: flush: %w", err)
		}
		use := s.diskUsage()
		if use <= uint64(s.cfg.MaxBytes) {
			break
		}
		first, last, ok := s.timeSpan()
		if !ok {
			break
		}
		// Drop the share of the time span that the excess is of the
		// store, and a tenth more, so that a store at its bound is not
		// trimmed on every call.
		share := float64(use-uint64(s.cfg.MaxBytes))/float64(use) + 0.1
		cutAt := first.Add(time.Duration(float64(last.Sub(first)) * min(share, 0.9)))
		if !cutAt.After(first) {
			cutAt = first.Add(1)
		}
		n, err := s.dropBefore(ctx, cutAt)
		if err != nil {
			return expired, evicted, err
		}
		evicted += n
		s.counts.Evicted += n
	}
	if expired+evicted > 0 {
		if err := s.saveState(); err != nil {
			return expired, evicted, err
		}
		s.log.Info("dropped old flows", "expired", expired, "evicted", evicted, "bytes", s.diskUsage())
	}
	return expired, evicted, nil
}

// dropBefore deletes the flows filed before t and the index hours wholly
// before it, and compacts what it deleted so that the disk is freed.
func (s *Store) dropBefore(ctx context.Context, t time.Time) (uint64, error) {
	lo, hi := []byte{tabFlow}, timeBound(t)
	n, err := s.countRange(lo, hi)
	if err != nil || n == 0 {
		return 0, err
	}
	wb := s.db.NewBatch()
	defer wb.Close()
	if err := wb.DeleteRange(lo, hi, nil); err != nil {
		return 0, fmt.Errorf("flowstore: drop flows: %w", err)
	}
	for _, tab := range []byte{tabWorkload, tabNamespace} {
		if err := wb.DeleteRange([]byte{tab}, bucketBound(tab, bucketOf(t)), nil); err != nil {
			return 0, fmt.Errorf("flowstore: drop index: %w", err)
		}
	}
	if err := wb.Commit(pebble.Sync); err != nil {
		return 0, fmt.Errorf("flowstore: drop flows: %w", err)
	}
	for _, r := range [][2][]byte{{lo, hi}, {[]byte{tabWorkload}, bucketBound(tabWorkload, bucketOf(t))},
		{[]byte{tabNamespace}, bucketBound(tabNamespace, bucketOf(t))}} {
		if err := s.db.Compact(ctx, r[0], r[1], false); err != nil {
			return n, fmt.Errorf("flowstore: compact dropped flows: %w", err)
		}
	}
	return n, nil
}

func (s *Store) countRange(lo, hi []byte) (uint64, error) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi, KeyTypes: pebble.IterKeyTypePointsOnly})
	if err != nil {
		return 0, fmt.Errorf("flowstore: count flows: %w", err)
	}
	defer it.Close()
	var n uint64
	for ok := it.First(); ok; ok = it.Next() {
		n++
	}
	return n, it.Error()
}

// timeSpan is the time of the oldest and the newest flow.
func (s *Store) timeSpan() (first, last time.Time, ok bool) {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{tabFlow}, UpperBound: []byte{tabFlow + 1}})
	if err != nil {
		return first, last, false
	}
	defer it.Close()
	if !it.First() {
		return first, last, false
	}
	first = timeOfFlowKey(it.Key())
	it.Last()
	return first, timeOfFlowKey(it.Key()), true
}

// diskUsage is the bytes the store's tables hold on disk: what the flows
// take, less the write-ahead log (a few MiB, recycled) and what the
// memtable holds until it is flushed.
func (s *Store) diskUsage() uint64 {
	n, err := s.db.EstimateDiskUsage([]byte{0}, []byte{0xff})
	if err != nil {
		return s.db.Metrics().DiskSpaceUsage()
	}
	return n
}

// DiskUsage is the bytes the store holds on disk.
func (s *Store) DiskUsage() uint64 { return s.diskUsage() }

func (s *Store) saveState() error {
	wb := s.db.NewBatch()
	defer wb.Close()
	if err := putState(wb, s.counts, s.nextID); err != nil {
		return err
	}
	if err := wb.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("flowstore: write counts: %w", err)
	}
	return nil
}
