package feed

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/identities"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// TestSlowReaderIsCutOff: a reader that leaves its queue full is cut off
// with a "cutoff" line naming where to resume, while the store's writers
// go on unhindered.
func TestSlowReaderIsCutOff(t *testing.T) {
	s, st, ctx := newServer(t, 4, 50*time.Millisecond)
	put := func(i int) int64 {
		v, _ := json.Marshal(api.Identity{ID: uint32(1000 + i), Namespace: "ns"})
		rev, _, err := st.Txn(ctx, nil, []store.Op{store.Put(identities.Key(uint32(1000+i)), v)})
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	first := put(0)
	q := newFeedQueue(s.Buffer, s.Cutoff)
	go func() {
		defer close(q.done)
		q.err = s.produce(ctx, first, q)
	}()
	// Nobody reads while the store moves on; writers never wait.
	start := time.Now()
	var last int64
	for i := 1; i <= 50; i++ {
		last = put(i)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("50 writes took %s with a stuck watcher", d)
	}
	select {
	case <-q.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the slow reader was not cut off")
	}
	if !errors.Is(q.err, errSlowReader) {
		t.Fatalf("producer ended with %v, want a slow reader", q.err)
	}
	// The writer sends what was queued, then the cutoff line.
	rec := httptest.NewRecorder()
	s.writeFeed(ctx, rec, func() error { return nil }, q)
	var lines []api.FeedEvent
	sc := bufio.NewScanner(strings.NewReader(rec.Body.String()))
	for sc.Scan() {
		var ev api.FeedEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		lines = append(lines, ev)
	}
	end := lines[len(lines)-1]
	if end.Type != api.FeedCutoff || !strings.Contains(end.Reason, "slow reader") ||
		!strings.Contains(end.Reason, fmt.Sprintf("resume with from=%d", end.Rev+1)) || end.Rev >= last {
		t.Fatalf("last line %+v (of %d); the store is at %d", end, len(lines), last)
	}
}
