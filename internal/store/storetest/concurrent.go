package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// allocate gives label an identity, the same one whoever asks and however
// many ask at once: the manager's identity allocation in miniature.
func allocate(ctx context.Context, s store.Store, label string) (int, error) {
	for {
		byLabel, err := s.Get(ctx, "ids/by-label/"+label)
		if err == nil {
			return strconv.Atoi(string(byLabel.Value))
		}
		if !errors.Is(err, store.ErrNotFound) {
			return 0, err
		}
		next, err := s.Get(ctx, "ids/next")
		id := 1
		switch {
		case err == nil:
			if id, err = strconv.Atoi(string(next.Value)); err != nil {
				return 0, err
			}
		case !errors.Is(err, store.ErrNotFound):
			return 0, err
		}
		v := []byte(strconv.Itoa(id))
		_, ok, err := s.Txn(ctx,
			[]store.Cond{store.Unchanged(byLabel), store.Unchanged(next)},
			[]store.Op{
				store.Put("ids/by-label/"+label, v),
				store.Put("ids/by-id/"+string(v), []byte(label)),
				store.Put("ids/next", []byte(strconv.Itoa(id+1))),
			})
		if err != nil {
			return 0, err
		}
		if ok {
			return id, nil
		}
	}
}

func testConcurrentCAS(t *testing.T, open Opener) {
	s1, another := open(t)
	handles := []store.Store{s1, another()}
	const workers, perWorker, labels = 8, 30, 60
	ctx := ctxFor(t)

	var mu sync.Mutex
	got := map[string]map[int]bool{} // label → ids handed out for it
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			s := handles[w%len(handles)]
			rnd := rand.New(rand.NewPCG(uint64(w), 1))
			for range perWorker {
				label := fmt.Sprintf("l%d", rnd.IntN(labels))
				id, err := allocate(ctx, s, label)
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				if got[label] == nil {
					got[label] = map[int]bool{}
				}
				got[label][id] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	owner := map[int]string{}
	for label, ids := range got {
		if len(ids) != 1 {
			t.Errorf("label %s got identities %v, want one", label, ids)
		}
		for id := range ids {
			if other, dup := owner[id]; dup {
				t.Errorf("identity %d given to %s and %s", id, other, label)
			}
			owner[id] = label
		}
	}
	for id := 1; id <= len(got); id++ {
		if owner[id] == "" {
			t.Errorf("identity %d skipped", id)
		}
	}
	valueIs(t, get(t, s1, "ids/next"), strconv.Itoa(len(got)+1))
	kvs, _ := list(t, s1, "ids/by-id/")
	if len(kvs) != len(got) {
		t.Errorf("%d identities stored, %d handed out", len(kvs), len(got))
	}
}

func testTwoHandles(t *testing.T, open Opener) {
	s1, another := open(t)
	s2 := another()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	start := rev(t, s1) + 1
	w1, w2 := s1.Watch(ctx, "w/", start), s2.Watch(ctx, "w/", start)

	var want []event
	for i := range 20 {
		s := []store.Store{s1, s2}[i%2]
		key, val := fmt.Sprintf("w/%d", i%5), fmt.Sprint(i)
		r := put(t, s, key, val)
		want = append(want, event{store.EventPut, key, val, r})
		// What one handle wrote, the other reads at once.
		valueIs(t, get(t, []store.Store{s2, s1}[i%2], key), val)
	}
	last := want[len(want)-1].rev
	equalEvents(t, "watch on the first handle", collect(t, w1, last), want)
	equalEvents(t, "watch on the second handle", collect(t, w2, last), want)

	// Closing one handle leaves the other working.
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ended(t, w1); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("watch on a closed handle ended with %v, want ErrClosed", err)
	}
	r := put(t, s2, "w/after", "x")
	equalEvents(t, "watch on the open handle", collect(t, w2, r), []event{{store.EventPut, "w/after", "x", r}})
}

func testListSnapshot(t *testing.T, open Opener) {
	s, _ := open(t)
	const keys = 10
	writeAll := func(ctx context.Context, i int) error {
		ops := make([]store.Op, keys)
		for k := range ops {
			ops[k] = store.Put(fmt.Sprintf("snap/%02d", k), []byte(strconv.Itoa(i)))
		}
		_, _, err := s.Txn(ctx, nil, ops)
		return err
	}
	ctx := ctxFor(t)
	if err := writeAll(ctx, 0); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := 1; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := writeAll(ctx, i); err != nil {
				done <- err
				return
			}
		}
	}()
	deadline := time.Now().Add(300 * time.Millisecond)
	lists := 0
	for ; time.Now().Before(deadline) || lists < 20; lists++ {
		kvs, r := list(t, s, "snap/")
		if len(kvs) != keys {
			t.Fatalf("list of a txn's %d keys gave %d", keys, len(kvs))
		}
		for _, kv := range kvs {
			if string(kv.Value) != string(kvs[0].Value) || kv.ModRev != kvs[0].ModRev || kv.ModRev > r {
				t.Fatalf("list at revision %d mixes revisions: %q=%q@%d and %q=%q@%d",
					r, kvs[0].Key, kvs[0].Value, kvs[0].ModRev, kv.Key, kv.Value, kv.ModRev)
			}
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
