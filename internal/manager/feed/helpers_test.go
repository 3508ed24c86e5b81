package feed

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/manager/revisions"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

// newServer makes a feed Server over a fresh bbolt store, its watches
// buffering buffer chunks for cutoff; the store closes and ctx (20 s)
// ends when the test does. The test runs the hub itself if it wants one.
func newServer(t *testing.T, buffer int, cutoff time.Duration) (*Server, store.Store, context.Context) {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "bhm2.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	s := &Server{Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Heartbeat: 5 * time.Second, Buffer: buffer, Cutoff: cutoff,
		History: &revisions.History{Blobs: &revisions.Blobs{Store: st}, Check: func(*revisions.Record) error { return nil }}}
	s.init()
	return s, st, ctx
}
