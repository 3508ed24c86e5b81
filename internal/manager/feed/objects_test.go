package feed

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/revisions"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// commitRevision writes the revision seq of objs as the manager does:
// blobs, then the record as the head and under its number.
func commitRevision(t *testing.T, ctx context.Context, s *Server, seq int64, names ...string) int64 {
	t.Helper()
	objs := map[string]revisions.Object{}
	for _, n := range names {
		o := revisions.Blob([]byte(`{"kind":"Policy","metadata":{"name":"` + n + `"}}`))
		o.Ref = api.ObjectRef{Kind: "Policy", Name: n}
		objs[objects.Key(o.Ref)] = o
	}
	items := map[string][]byte{}
	for _, o := range objs {
		items[o.Hash] = o.JSON
	}
	chunks, order := revisions.Manifest(objs)
	for h, v := range chunks {
		items[h] = v
	}
	if err := s.History.Blobs.Stage(ctx, items); err != nil {
		t.Fatal(err)
	}
	value, _ := json.Marshal(revisions.Record{Seq: seq, Objects: len(objs), Manifest: order})
	rev, _, err := s.Store.Txn(ctx, nil, []store.Op{store.Put(revisions.HeadKey, value), store.Put(revisions.Key(seq), value)})
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// TestHeadChangesAreObjectLines: a snapshot sends every object of the
// head and a "rev" line naming the policy revision; a later head change
// sends only what changed from its parent.
func TestHeadChangesAreObjectLines(t *testing.T) {
	s, _, ctx := newServer(t, 16, 10*time.Second)
	first := commitRevision(t, ctx, s, 1, "a", "b")
	q := newFeedQueue(s.Buffer, s.Cutoff)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { defer close(q.done); q.err = s.produce(rctx, 0, q) }()

	var lines []api.FeedEvent
	read := func(until func(api.FeedEvent) bool) {
		t.Helper()
		for {
			select {
			case c := <-q.ch:
				sc := bufio.NewScanner(bytes.NewReader(c.data))
				for sc.Scan() {
					var ev api.FeedEvent
					if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
						t.Fatal(err)
					}
					lines = append(lines, ev)
					if until(ev) {
						return
					}
				}
			case <-ctx.Done():
				t.Fatalf("no end line; got %+v", lines)
			}
		}
	}
	read(func(ev api.FeedEvent) bool { return ev.Type == api.FeedRev })
	if got := objectOps(lines); got != "put a, put b" || lines[0].Type != api.FeedSnapshot || lines[len(lines)-1].Policy != first {
		t.Fatalf("snapshot: %s; lines %+v", got, lines)
	}

	lines = nil
	second := commitRevision(t, ctx, s, 2, "b", "c")
	read(func(ev api.FeedEvent) bool { return ev.Type == api.FeedRev && ev.Rev == second })
	if got := objectOps(lines); got != "delete a, put c" || lines[len(lines)-1].Policy != second {
		t.Errorf("head change: %s; lines %+v", got, lines)
	}
}

func objectOps(lines []api.FeedEvent) string {
	out := ""
	for _, ev := range lines {
		if ev.Type == api.FeedObject {
			if out != "" {
				out += ", "
			}
			out += ev.Op + " " + ev.Ref.Name
		}
	}
	return out
}
