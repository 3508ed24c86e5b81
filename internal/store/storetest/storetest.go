// Package storetest is the conformance suite of store.Store: every
// implementation runs it from its own tests, so that the manager may rely
// on one behaviour whichever store it is given.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) { … })
//	}
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Opener returns a new, empty store with default limits for one test, and
// a function that opens another handle on the same backing, as a second
// manager would (for etcd: another client; for an embedded store: another
// handle in the same process). The opener closes what it opened with
// t.Cleanup; the suite may close handles itself too.
type Opener func(t *testing.T) (s store.Store, another func() store.Store)

// Run runs the whole suite, one subtest per behaviour. The subtests run one
// after another, so that a store's revisions are its own while each runs.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"CRUD", testCRUD},
		{"ListPrefix", testListPrefix},
		{"ValuesAreCopied", testValuesAreCopied},
		{"TxnConditions", testTxnConditions},
		{"TxnAtomic", testTxnAtomic},
		{"OneRevisionPerTxn", testOneRevisionPerTxn},
		{"ListSnapshot", testListSnapshot},
		{"WatchOrder", testWatchOrder},
		{"WatchResume", testWatchResume},
		{"WatchFromNow", testWatchFromNow},
		{"WatchCancel", testWatchCancel},
		{"Compacted", testCompacted},
		{"ConcurrentCAS", testConcurrentCAS},
		{"TwoHandles", testTwoHandles},
		{"SlowWatcher", testSlowWatcher},
		{"Limits", testLimits},
		{"Closed", testClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open) })
	}
}

// waitFor bounds every wait of the suite; nothing a store does should take
// a good fraction of it.
const waitFor = 10 * time.Second

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

func put(t *testing.T, s store.Store, key, value string) int64 {
	t.Helper()
	return txn(t, s, nil, store.Put(key, []byte(value)))
}

func del(t *testing.T, s store.Store, key string) int64 {
	t.Helper()
	return txn(t, s, nil, store.Delete(key))
}

// txn runs a Txn that must succeed.
func txn(t *testing.T, s store.Store, conds []store.Cond, ops ...store.Op) int64 {
	t.Helper()
	rev, ok, err := s.Txn(ctxFor(t), conds, ops)
	if err != nil || !ok {
		t.Fatalf("txn %v %v: rev %d ok %v err %v", conds, ops, rev, ok, err)
	}
	return rev
}

func get(t *testing.T, s store.Store, key string) store.KV {
	t.Helper()
	kv, err := s.Get(ctxFor(t), key)
	if err != nil {
		t.Fatalf("get %q: %v", key, err)
	}
	return kv
}

func mustAbsent(t *testing.T, s store.Store, key string) {
	t.Helper()
	kv, err := s.Get(ctxFor(t), key)
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get %q: got %+v, %v; want ErrNotFound", key, kv, err)
	}
	if kv.Key != key || kv.ModRev != 0 || kv.CreateRev != 0 || kv.Value != nil {
		t.Fatalf("get %q: absent key gave %+v; want only Key set", key, kv)
	}
}

func rev(t *testing.T, s store.Store) int64 {
	t.Helper()
	r, err := s.Rev(ctxFor(t))
	if err != nil {
		t.Fatalf("rev: %v", err)
	}
	return r
}

func list(t *testing.T, s store.Store, prefix string) ([]store.KV, int64) {
	t.Helper()
	kvs, r, err := s.List(ctxFor(t), prefix)
	if err != nil {
		t.Fatalf("list %q: %v", prefix, err)
	}
	return kvs, r
}

func keysOf(kvs []store.KV) []string {
	keys := make([]string, len(kvs))
	for i, kv := range kvs {
		keys[i] = kv.Key
	}
	return keys
}

// event is an Event written down for comparison.
type event struct {
	typ   store.EventType
	key   string
	value string
	rev   int64
}

func (e event) String() string { return fmt.Sprintf("%v %s=%q@%d", e.typ, e.key, e.value, e.rev) }

func eventOf(ev store.Event) event {
	return event{ev.Type, ev.KV.Key, string(ev.KV.Value), ev.KV.ModRev}
}

// collect reads w until it holds events up to and including revision last,
// checking that revisions never go back and that batches hold whole
// revisions (no revision continues into the next batch).
func collect(t *testing.T, w *store.Watcher, last int64) []event {
	t.Helper()
	var got []event
	timeout := time.After(waitFor)
	prevBatchLast := int64(0)
	for len(got) == 0 || got[len(got)-1].rev < last {
		select {
		case batch, open := <-w.C:
			if !open {
				t.Fatalf("watch ended after %v: %v", got, w.Err())
			}
			if len(batch) == 0 {
				t.Fatal("empty batch")
			}
			if batch[0].KV.ModRev <= prevBatchLast {
				t.Fatalf("batch starts at revision %d, after a batch that ended at %d", batch[0].KV.ModRev, prevBatchLast)
			}
			for i, ev := range batch {
				if i > 0 && ev.KV.ModRev < batch[i-1].KV.ModRev {
					t.Fatalf("revision %d after %d in one batch", ev.KV.ModRev, batch[i-1].KV.ModRev)
				}
				got = append(got, eventOf(ev))
			}
			prevBatchLast = batch[len(batch)-1].KV.ModRev
		case <-timeout:
			t.Fatalf("timed out waiting for revision %d; got %v", last, got)
		}
	}
	if got[len(got)-1].rev != last {
		t.Fatalf("got events past revision %d: %v", last, got)
	}
	return got
}

// ended waits for w to end and returns its error.
func ended(t *testing.T, w *store.Watcher) error {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case batch, open := <-w.C:
			if !open {
				if w.Err() == nil {
					t.Fatal("watch ended with a nil Err")
				}
				return w.Err()
			}
			t.Fatalf("want the watch to end, got %d events from revision %d", len(batch), batch[0].KV.ModRev)
		case <-timeout:
			t.Fatal("timed out waiting for the watch to end")
		}
	}
}

func equalEvents(t *testing.T, what string, got, want []event) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d events, want %d:\ngot  %v\nwant %v", what, len(got), len(want), got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: event %d is %v, want %v\ngot  %v\nwant %v", what, i, got[i], want[i], got, want)
		}
	}
}

func valueIs(t *testing.T, kv store.KV, want string) {
	t.Helper()
	if !bytes.Equal(kv.Value, []byte(want)) {
		t.Fatalf("%q = %q, want %q", kv.Key, kv.Value, want)
	}
}
