package etcdstore

import (
	"context"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Watch implements store.Store with an etcd watch, requiring a leader so
// that a manager cut off from the etcd majority learns it at once instead of
// waiting on a watch that will never deliver.
//
// etcd keeps a compacted revision's state but may drop its deletes, so a
// watch from the compacted revision itself is not complete. store's rule is
// that Watch accepts fromRev > the compacted revision only; to get etcd to
// say so, the watch asks etcd for fromRev-1 and drops that revision's
// events: etcd refuses it exactly when fromRev <= the compacted revision.
//
// The etcd client buffers without bound, so the watcher reads it at once
// into the store.Feed, and cuts itself off when the reader lets that fill.
func (s *Store) Watch(ctx context.Context, prefix string, fromRev int64) *store.Watcher {
	fromRev, err := s.limits.WatchStart(ctx, prefix, fromRev, s.Rev)
	if err != nil {
		return store.Failed(err)
	}
	if err := s.checkOpen("watch"); err != nil {
		return store.Failed(err)
	}
	feed, w := store.NewFeed(prefix, fromRev, s.buffer)
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	stop := context.AfterFunc(s.ctx, cancel)
	s.watchers.Add(1)
	go func() {
		defer s.watchers.Done()
		defer stop()
		defer cancel()
		s.follow(wctx, feed, prefix, fromRev)
		if wctx.Err() != nil {
			feed.End(s.why(ctx, prefix))
		}
	}()
	return w
}

func (s *Store) follow(ctx context.Context, feed *store.Feed, prefix string, fromRev int64) {
	askRev := fromRev
	if askRev > 1 {
		askRev--
	}
	for resp := range s.cli.Watch(ctx, s.prefix+prefix, clientv3.WithPrefix(), clientv3.WithRev(askRev)) {
		if resp.CompactRevision != 0 {
			feed.End(&store.CompactedError{Prefix: prefix, From: feed.Next(), Oldest: resp.CompactRevision + 1})
			return
		}
		if err := resp.Err(); err != nil {
			if ctx.Err() == nil {
				feed.End(fmt.Errorf("store: watch %q: %w", prefix, err))
			}
			return
		}
		var batch []store.Event
		for _, ev := range resp.Events {
			if ev.Kv.ModRevision < fromRev {
				continue
			}
			e := store.Event{Type: store.EventPut, KV: s.kv(ev.Kv)}
			if ev.Type == mvccpb.DELETE {
				e = store.Event{Type: store.EventDelete, KV: store.KV{Key: e.KV.Key, ModRev: e.KV.ModRev}}
			}
			batch = append(batch, e)
		}
		if len(batch) > 0 && !feed.Offer(batch) {
			return
		}
	}
	if ctx.Err() == nil {
		feed.End(fmt.Errorf("store: watch %q: etcd ended the watch", prefix))
	}
}

// why says why a watch's context ended: the store closed, or the caller's.
func (s *Store) why(ctx context.Context, prefix string) error {
	if s.isClosed.Load() {
		return fmt.Errorf("store: watch %q: %w", prefix, store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: watch %q: %w", prefix, err)
	}
	return fmt.Errorf("store: watch %q: etcd ended the watch", prefix)
}
