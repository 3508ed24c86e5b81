package manager

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

// newInternal makes a Manager over a fresh bbolt store for a test of the
// package's insides: cfg gives what the test sets beyond the store, the
// data directory and a quiet logger. The store closes and ctx (20 s) ends
// when the test does; the test starts and closes the Manager itself.
func newInternal(t *testing.T, cfg Config) (*Manager, store.Store, context.Context) {
	t.Helper()
	dir := t.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	cfg.Store, cfg.DataDir, cfg.Logger = st, dir, slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m, st, ctx
}
