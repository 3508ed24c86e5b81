package feed

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// feedHub follows the store's feed/ keys once for all the watches of
// this manager: each revision's lines are encoded once, when the store
// reports it, and kept in a log of recent revisions that every watch
// reads by reference. A change therefore costs one store read and one
// encoding however many agents follow, and each watch only copies a
// slice header before writing the shared bytes to its connection.
//
// The log keeps every feed revision after floor, up to hubBytes of
// lines; older ones are dropped (floor moves up). A watch that needs a
// revision at or below floor — it starts from an old revision, or fell
// that far behind — catches up from the store itself (Server.follow)
// and comes back to the log as soon as the log holds what it needs next.
type feedHub struct {
	mu      sync.Mutex
	entries []hubEntry // ascending revisions, all after floor
	floor   int64      // every feed revision after floor is in entries, or yet to come
	bytes   int
	changed chan struct{} // closed and replaced at every new entry and reset
	max     int           // bytes of lines to keep
}

// hubEntry is one revision's lines, its "rev" line last.
type hubEntry struct {
	rev  int64
	data []byte
}

// hubBytes bounds the lines the log keeps.
const hubBytes = 16 << 20

func newFeedHub() *feedHub {
	// Until it follows the store, the hub holds nothing: every watch reads
	// the store.
	return &feedHub{changed: make(chan struct{}), max: hubBytes, floor: 1<<63 - 1}
}

// covers reports whether the log holds (or will hold) every feed
// revision from from on.
func (h *feedHub) covers(from int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return from > h.floor
}

// since returns the entries from revision from on, and a channel closed
// when there are more; ok is false when the log no longer holds from.
func (h *feedHub) since(from int64) (entries []hubEntry, changed <-chan struct{}, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if from <= h.floor {
		return nil, nil, false
	}
	i := sort.Search(len(h.entries), func(i int) bool { return h.entries[i].rev >= from })
	if i < len(h.entries) {
		entries = append([]hubEntry(nil), h.entries[i:]...)
	}
	return entries, h.changed, true
}

// reset empties the log: it holds the revisions after floor from now on.
func (h *feedHub) reset(floor int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.entries, h.bytes, h.floor = nil, 0, floor
	close(h.changed)
	h.changed = make(chan struct{})
}

// add appends a revision's lines and drops the oldest beyond the bound.
func (h *feedHub) add(e hubEntry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.entries = append(h.entries, e)
	h.bytes += len(e.data)
	drop := 0
	for h.bytes > h.max && drop < len(h.entries)-1 {
		h.bytes -= len(h.entries[drop].data)
		h.floor = h.entries[drop].rev
		drop++
	}
	if drop > 0 {
		// A new array, so that the dropped lines are freed and the
		// slices handed out never see their elements change.
		h.entries = append([]hubEntry(nil), h.entries[drop:]...)
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

// Run follows the store for the hub until ctx ends.
func (s *Server) Run(ctx context.Context) {
	s.init()
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		rev, err := s.Store.Rev(ctx)
		if err != nil {
			s.Log.Warn("feed hub: read the store's revision; retrying", "err", err, "in", backoff)
			sleep(ctx, backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		s.hub.reset(rev)
		from := rev + 1
		for ctx.Err() == nil {
			next, err := s.hubFollow(ctx, from)
			if next > from {
				backoff = 50 * time.Millisecond
			}
			from = next
			var compacted *store.CompactedError
			if errors.As(err, &compacted) || errors.Is(err, store.ErrClosed) {
				break // start again from the store's revision; watches behind it read the store
			}
			if ctx.Err() == nil {
				s.Log.Debug("feed hub: watch ended; resuming", "from", from, "err", err)
				sleep(ctx, backoff)
				backoff = min(2*backoff, 5*time.Second)
			}
		}
		if ctx.Err() == nil {
			sleep(ctx, backoff)
		}
	}
}

// hubFollow encodes each revision from from on into the hub; it returns
// where to resume.
func (s *Server) hubFollow(ctx context.Context, from int64) (int64, error) {
	return s.eachRevision(ctx, from, func(rev int64, data []byte) (bool, error) {
		s.hub.add(hubEntry{rev: rev, data: data})
		return false, nil
	})
}

// eachRevision watches the feed's keys from rev from on and gives fn each
// revision's encoded lines, in order, until fn says stop after one
// batch of the watch, fails, or the watch ends; it returns the revision
// to resume from.
func (s *Server) eachRevision(ctx context.Context, from int64, fn func(rev int64, data []byte) (stop bool, err error)) (int64, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := s.Store.Watch(wctx, Prefix, from)
	for batch := range w.C {
		stop := false
		for len(batch) > 0 {
			rev := batch[0].KV.ModRev
			n := 1
			for n < len(batch) && batch[n].KV.ModRev == rev {
				n++
			}
			data, err := s.revisionLines(ctx, batch[:n])
			if err != nil {
				return from, err
			}
			if stop, err = fn(rev, data); err != nil {
				return from, err
			}
			from, batch = rev+1, batch[n:]
		}
		if stop {
			return from, nil
		}
	}
	return from, w.Err()
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
