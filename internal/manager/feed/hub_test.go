package feed

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/identities"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// TestFeedHubAndStoreAgree: watches that start before the hub's log,
// inside it, and at its end, and readers slow enough that the log drops
// what they have yet to send, all get every feed revision once, in
// order, with its lines: from the store while behind the log, from the
// log otherwise.
func TestFeedHubAndStoreAgree(t *testing.T) {
	s, st, ctx := newServer(t, 256, 10*time.Second)
	s.hub.max = 2 << 10 // a dozen revisions
	put := func(i int) int64 {
		v, _ := json.Marshal(api.Identity{ID: uint32(1000 + i), Namespace: "ns"})
		rev, _, err := st.Txn(ctx, nil, []store.Op{store.Put(identities.Key(uint32(1000+i)), v)})
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	var revs []int64 // every feed revision, in order
	for i := range 20 {
		revs = append(revs, put(i)) // before the hub: only the store has them
	}
	hctx, stopHub := context.WithCancel(ctx)
	hubDone := make(chan struct{})
	go func() { defer close(hubDone); s.Run(hctx) }()
	defer func() { stopHub(); <-hubDone }()
	for deadline := time.Now().Add(5 * time.Second); !s.hub.covers(revs[len(revs)-1] + 1); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the hub did not start")
		}
	}

	type reader struct {
		from  int64
		delay time.Duration
		mu    sync.Mutex
		got   []int64 // revisions of the rev lines
		ids   int
	}
	readers := []*reader{{from: revs[0]}, {from: revs[10], delay: 2 * time.Millisecond}, {from: revs[19] + 1},
		{from: revs[19] + 1, delay: 5 * time.Millisecond}}
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, r := range readers {
		q := newFeedQueue(4, 10*time.Second)
		wg.Add(2)
		go func() { defer wg.Done(); _ = s.produce(rctx, r.from, q) }()
		go func() {
			defer wg.Done()
			for {
				select {
				case c := <-q.ch:
					sc := bufio.NewScanner(bytes.NewReader(c.data))
					for sc.Scan() {
						var ev api.FeedEvent
						if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
							t.Error(err)
						}
						r.mu.Lock()
						switch ev.Type {
						case api.FeedRev:
							r.got = append(r.got, ev.Rev)
						case api.FeedIdentity:
							r.ids++
						}
						r.mu.Unlock()
					}
					time.Sleep(r.delay)
				case <-rctx.Done():
					return
				}
			}
		}()
	}
	for i := 20; i < 120; i++ {
		revs = append(revs, put(i))
	}
	last := revs[len(revs)-1]
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		done := true
		for _, r := range readers {
			r.mu.Lock()
			done = done && len(r.got) > 0 && r.got[len(r.got)-1] == last
			r.mu.Unlock()
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the readers did not reach the last revision")
		}
	}
	stop()
	wg.Wait()
	for _, r := range readers {
		var want []int64
		for _, rev := range revs {
			if rev >= r.from {
				want = append(want, rev)
			}
		}
		if len(r.got) != len(want) || r.ids != len(want) {
			t.Fatalf("reader from %d: %d rev lines and %d identity lines, want %d", r.from, len(r.got), r.ids, len(want))
		}
		for i := range want {
			if r.got[i] != want[i] {
				t.Fatalf("reader from %d: rev line %d is %d, want %d", r.from, i, r.got[i], want[i])
			}
		}
	}
}
