package boltstore

import (
	"context"
	"fmt"

	"go.etcd.io/bbolt"

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// A watcher holds no events of its own: it reads the history bucket from
// the revision it has reached, in batches, and waits for the next revision
// when it has read everything. A writer only wakes it, so writers never
// wait for watchers, and a watcher that does not read costs nothing until
// the history it needs is compacted away: then it ends with ErrCompacted.
const (
	batchEvents = 1024 // a batch closes at the first whole revision past this many events
	batchRevs   = 4096 // revisions read per bolt read transaction at most
)

// Watch implements store.Store.
func (s *Store) Watch(ctx context.Context, prefix string, fromRev int64) *store.Watcher {
	fromRev, err := s.limits.WatchStart(ctx, prefix, fromRev, s.Rev)
	if err != nil {
		return store.Failed(err)
	}
	if err := s.use("watch"); err != nil {
		return store.Failed(err)
	}
	defer s.mu.RUnlock()
	feed, w := store.NewFeed(prefix, fromRev, s.buffer)
	s.watchers.Add(1)
	go s.follow(ctx, feed, prefix, fromRev)
	return w
}

func (s *Store) follow(ctx context.Context, feed *store.Feed, prefix string, next int64) {
	defer s.watchers.Done()
	for {
		changed := s.b.changes()
		batch, reached, err := s.readHistory(prefix, next)
		if err != nil {
			feed.End(err)
			return
		}
		next = reached
		if len(batch) > 0 {
			if !feed.Send(ctx, s.closed, batch) {
				feed.End(s.why(ctx, prefix))
				return
			}
			continue
		}
		if reached <= s.currentRev() {
			continue // the read stopped at batchRevs revisions without events
		}
		select {
		case <-changed:
		case <-ctx.Done():
			feed.End(s.why(ctx, prefix))
			return
		case <-s.closed:
			feed.End(s.why(ctx, prefix))
			return
		}
	}
}

// why says why a watch stopped waiting: the store closed or ctx ended.
func (s *Store) why(ctx context.Context, prefix string) error {
	select {
	case <-s.closed:
		return fmt.Errorf("store: watch %q: %w", prefix, store.ErrClosed)
	default:
		return fmt.Errorf("store: watch %q: %w", prefix, ctx.Err())
	}
}

func (s *Store) currentRev() int64 {
	var rev int64
	s.b.db.View(func(tx *bbolt.Tx) error {
		rev = decodeRev(tx.Bucket(bucketMeta).Get(metaRev))
		return nil
	})
	return rev
}

// readHistory reads the events under prefix from revision next on, whole
// revisions, up to about batchEvents events, and returns them with the
// revision to continue from.
func (s *Store) readHistory(prefix string, next int64) (batch []store.Event, reached int64, err error) {
	if err := s.use("watch"); err != nil {
		return nil, next, err
	}
	defer s.mu.RUnlock()
	reached = next
	err = s.b.db.View(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if compacted := decodeRev(meta.Get(metaCompacted)); next <= compacted {
			return &store.CompactedError{Prefix: prefix, From: next, Oldest: compacted + 1}
		}
		c := tx.Bucket(bucketHistory).Cursor()
		for k, v := c.Seek(revKey(next)); k != nil && reached-next < batchRevs && len(batch) < batchEvents; k, v = c.Next() {
			rev := decodeRev(k)
			if batch, err = decodeEvents(batch, rev, v, prefix); err != nil {
				return err
			}
			reached = rev + 1
		}
		return nil
	})
	return batch, reached, err
}
