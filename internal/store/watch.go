package store

import (
	"context"
	"fmt"
	"sync"
)

// DefaultWatchBuffer is how many batches a Watcher holds for its reader
// before an implementation that cannot wait cuts it off.
const DefaultWatchBuffer = 256

// Watcher is the reading end of a Watch. Receive from C until it is
// closed, then call Err:
//
//	w := s.Watch(ctx, "policies/", rev+1)
//	for batch := range w.C {
//		// batch holds one or more whole revisions, in order
//	}
//	err := w.Err() // why it ended; never nil
//
// Each batch is non-empty and holds whole revisions: all the events of a
// revision (under the prefix) arrive together, so a reader may act on each
// batch as a consistent change.
type Watcher struct {
	C <-chan []Event

	mu  sync.Mutex
	err error
}

// Err returns why the watch ended: a *CompactedError, an error wrapping
// ErrSlowWatcher, ErrClosed or the context's error, or another failure of
// the backing store. It is nil until C is closed.
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Feed is the sending end of a Watcher, for implementations of Store. Its
// methods must be called from one goroutine.
type Feed struct {
	w      *Watcher
	ch     chan []Event
	prefix string
	next   int64 // the revision a reader would resume from
	ended  bool
}

// NewFeed returns a Feed for a watch of prefix from fromRev, and the
// Watcher it feeds, holding up to buffer batches (DefaultWatchBuffer if
// buffer <= 0).
func NewFeed(prefix string, fromRev int64, buffer int) (*Feed, *Watcher) {
	if buffer <= 0 {
		buffer = DefaultWatchBuffer
	}
	ch := make(chan []Event, buffer)
	w := &Watcher{C: ch}
	return &Feed{w: w, ch: ch, prefix: prefix, next: fromRev}, w
}

// Failed returns a Watcher that has already ended with err.
func Failed(err error) *Watcher {
	f, w := NewFeed("", 0, 1)
	f.End(err)
	return w
}

// Offer hands batch to the reader without waiting. If the reader's buffer
// is full, Offer ends the watch with ErrSlowWatcher and returns false.
func (f *Feed) Offer(batch []Event) bool {
	if f.ended {
		return false
	}
	select {
	case f.ch <- batch:
		f.sent(batch)
		return true
	default:
		f.End(fmt.Errorf("store: watch %q: cut off with %d batches unread; resume from revision %d: %w",
			f.prefix, cap(f.ch), f.next, ErrSlowWatcher))
		return false
	}
}

// Send hands batch to the reader, waiting for room until ctx is done or
// stop is closed; it returns false if the batch was not sent.
func (f *Feed) Send(ctx context.Context, stop <-chan struct{}, batch []Event) bool {
	if f.ended {
		return false
	}
	select {
	case f.ch <- batch:
		f.sent(batch)
		return true
	case <-ctx.Done():
	case <-stop:
	}
	return false
}

func (f *Feed) sent(batch []Event) {
	f.next = batch[len(batch)-1].KV.ModRev + 1
}

// Next returns the revision after the last one sent: where a new watch
// would resume.
func (f *Feed) Next() int64 { return f.next }

// End ends the watch: Err will return err, and C is closed. Later calls do
// nothing.
func (f *Feed) End(err error) {
	if f.ended {
		return
	}
	f.ended = true
	f.w.mu.Lock()
	f.w.err = err
	f.w.mu.Unlock()
	close(f.ch)
}
