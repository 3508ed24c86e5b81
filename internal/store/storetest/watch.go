package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// writeMix writes n steps of puts, two-key txns and deletes under "w/",
// with a put outside it after each, and returns the events a watch of "w/"
// must see.
func writeMix(t *testing.T, s store.Store, n int) []event {
	t.Helper()
	var want []event
	for i := range n {
		val := fmt.Sprint(i)
		switch i % 4 {
		case 0, 1:
			key := fmt.Sprintf("w/%d", i%3)
			r := put(t, s, key, val)
			want = append(want, event{store.EventPut, key, val, r})
		case 2:
			// Two keys at one revision, in key order as etcd delivers them.
			r := txn(t, s, nil, store.Put("w/m1", []byte(val)), store.Put("w/m2", []byte(val)))
			want = append(want, event{store.EventPut, "w/m1", val, r}, event{store.EventPut, "w/m2", val, r})
		case 3:
			r := del(t, s, "w/m1")
			want = append(want, event{store.EventDelete, "w/m1", "", r})
		}
		put(t, s, "elsewhere", val)
	}
	return want
}

func since(evs []event, from int64) []event {
	var out []event
	for _, e := range evs {
		if e.rev >= from {
			out = append(out, e)
		}
	}
	return out
}

func watchAll(t *testing.T, s store.Store, from, last int64) []event {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	return collect(t, s.Watch(ctx, "w/", from), last)
}

func testWatchOrder(t *testing.T, open Opener) {
	s, _ := open(t)
	start := rev(t, s) + 1
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w := s.Watch(ctx, "w/", start)
	want := writeMix(t, s, 24)
	got := collect(t, w, want[len(want)-1].rev)
	equalEvents(t, "live watch", (got), want)
	// The same history, replayed from the start.
	equalEvents(t, "replayed watch", (watchAll(t, s, start, want[len(want)-1].rev)), want)
}

func testWatchResume(t *testing.T, open Opener) {
	s, _ := open(t)
	want := writeMix(t, s, 16)
	last := want[len(want)-1].rev
	mid := want[len(want)/2].rev
	equalEvents(t, "resumed", watchAll(t, s, mid, last), since(want, mid))
	// mid+1 is a revision outside the prefix: a fine place to resume from.
	equalEvents(t, "resumed between", watchAll(t, s, mid+1, last), since(want, mid+1))
}

func testWatchFromNow(t *testing.T, open Opener) {
	s, _ := open(t)
	put(t, s, "w/old", "old")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w := s.Watch(ctx, "w/", 0)
	// Every write after Watch returns must arrive, and nothing earlier.
	r := put(t, s, "w/new", "new")
	equalEvents(t, "watch from now", collect(t, w, r), []event{{store.EventPut, "w/new", "new", r}})
}

func testWatchCancel(t *testing.T, open Opener) {
	s, _ := open(t)
	ctx, cancel := context.WithCancel(t.Context())
	w := s.Watch(ctx, "w/", rev(t, s)+1)
	r := put(t, s, "w/a", "1")
	collect(t, w, r)
	cancel()
	if err := ended(t, w); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled watch ended with %v, want context.Canceled", err)
	}
}

func testCompacted(t *testing.T, open Opener) {
	s, _ := open(t)
	ctx := ctxFor(t)
	want := writeMix(t, s, 12)
	last := want[len(want)-1].rev
	at := want[len(want)/2].rev
	if err := s.Compact(ctx, at); err != nil {
		t.Fatalf("compact %d: %v", at, err)
	}

	// From the compacted revision or before: ErrCompacted with where to start.
	for _, from := range []int64{at, at - 1} {
		err := ended(t, s.Watch(ctx, "w/", from))
		var ce *store.CompactedError
		if !errors.As(err, &ce) || !errors.Is(err, store.ErrCompacted) {
			t.Fatalf("watch from compacted revision %d: %v, want a *CompactedError", from, err)
		}
		if ce.From != from || ce.Oldest != at+1 {
			t.Fatalf("watch from %d: %+v, want From %d, Oldest %d", from, ce, from, at+1)
		}
	}

	// After it: the rest of the history.
	equalEvents(t, "watch after the compacted revision", watchAll(t, s, at+1, last), since(want, at+1))

	// The current state is whole.
	kvs, r := list(t, s, "")
	if want := rev(t, s); r != want || len(kvs) != 5 {
		t.Fatalf("list after compaction: %d keys at revision %d, want 5 at revision %d", len(kvs), r, want)
	}
	valueIs(t, get(t, s, "elsewhere"), "11")

	// Compacting again, lower or the same, does nothing; the future is refused.
	for _, r := range []int64{at, at - 1} {
		if err := s.Compact(ctx, r); err != nil {
			t.Fatalf("compact to %d again: %v", r, err)
		}
	}
	if err := s.Compact(ctx, last+100); !errors.Is(err, store.ErrFutureRev) {
		t.Fatalf("compact beyond the current revision: %v, want ErrFutureRev", err)
	}
}

func testSlowWatcher(t *testing.T, open Opener) {
	s, _ := open(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	start := rev(t, s) + 1
	w := s.Watch(ctx, "w/", start)

	// Nobody reads while the writer writes more than any buffer holds; the
	// writer must not wait for the watcher.
	const n = 2*store.DefaultWatchBuffer + 50
	done := make(chan error, 1)
	var want []event
	go func() {
		for i := range n {
			key, val := fmt.Sprintf("w/%d", i%7), fmt.Sprint(i)
			r, _, err := s.Txn(ctx, nil, []store.Op{store.Put(key, []byte(val))})
			if err != nil {
				done <- err
				return
			}
			want = append(want, event{store.EventPut, key, val, r})
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(waitFor):
		t.Fatal("writer blocked behind a watcher that does not read")
	}
	last := want[len(want)-1].rev

	// Now read: the events come in order without a gap, all of them, or
	// the watch ends with a clear error and resumes where it stopped.
	var got []event
	resumes := -1
	for len(got) == 0 || got[len(got)-1].rev < last {
		if resumes++; resumes > 0 {
			err := w.Err()
			if !errors.Is(err, store.ErrSlowWatcher) && !errors.Is(err, store.ErrCompacted) {
				t.Fatalf("watch ended after %d events with %v, want ErrSlowWatcher or ErrCompacted", len(got), err)
			}
			if resumes > 5 {
				t.Fatalf("cut off %d times", resumes)
			}
			from := start
			if len(got) > 0 {
				from = got[len(got)-1].rev + 1
			}
			w = s.Watch(ctx, "w/", from)
		}
		got = append(got, readUntil(t, w, last)...)
	}
	equalEvents(t, "slow watcher", got, want)
	t.Logf("%d events read after the writer finished; the watch was cut off and resumed %d times", len(got), resumes)
}

// readUntil reads w until it delivers revision last or ends.
func readUntil(t *testing.T, w *store.Watcher, last int64) []event {
	t.Helper()
	var got []event
	timeout := time.After(waitFor)
	for {
		select {
		case batch, open := <-w.C:
			if !open {
				return got
			}
			for _, ev := range batch {
				got = append(got, eventOf(ev))
			}
			if got[len(got)-1].rev >= last {
				return got
			}
		case <-timeout:
			t.Fatalf("timed out after %d events", len(got))
		}
	}
}
