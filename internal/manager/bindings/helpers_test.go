package bindings_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/manager/auditlog"
	"github.com/bulkhead-dev/bulkhead/internal/manager/bindings"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

var ctx = context.Background()

// clock is a settable clock, shared by the Bindings and the audit log.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// openBolt opens a boltstore in the test's directory; it closes at the
// test's end.
func openBolt(t testing.TB, path string) store.Store {
	t.Helper()
	st, err := boltstore.Open(path, boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func openBoltTB(t testing.TB) store.Store { return openBolt(t, filepath.Join(t.TempDir(), "bhbn.db")) }

func boltPath(t *testing.T) string { return filepath.Join(t.TempDir(), "bhbn.db") }

// newBindings is one manager's Bindings over st, with an audit log of
// its own (its own data directory), as each manager of a cluster has.
func newBindings(t *testing.T, st store.Store, c *clock) *bindings.Bindings {
	t.Helper()
	if c == nil {
		c = newClock()
	}
	return bindings.New(bindings.Config{Store: st, Audit: newLogTB(t, st), Now: c.Now})
}

// newLogTB is an audit log over st with a data directory of its own.
func newLogTB(t testing.TB, st store.Store) *auditlog.Log {
	t.Helper()
	l := auditlog.New(auditlog.Config{Store: st, Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := l.LoadHead(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))); err != nil {
		t.Fatal(err)
	}
	return l
}

// class is a conflict class of four datasets with the given scope.
func class(scope string, window time.Duration) *policy.ConflictClass {
	return &policy.ConflictClass{Name: "bhbn-payments", Scope: scope, Window: window, Datasets: []policy.Dataset{
		{Name: "cards", Segment: "card-data"}, {Name: "ledger", Segment: "ledger-data"},
		{Name: "fx", Segment: "fx-data"}, {Name: "archive", Segment: "archive-data"}}}
}

func instance(name string) bindings.Instance {
	return bindings.Instance{Host: "bhbn-host-a", Namespace: "bhbn-pay", Name: name, ContainerID: "c0ffee-" + name}
}

var admin = audit.Actor{Kind: "token", Name: "bhbn-root", Role: "admin"}

// entries returns the audit log's entries of action.
func entries(t *testing.T, st store.Store, action string) []audit.Entry {
	t.Helper()
	all, err := audit.Read(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Entry
	for _, e := range all {
		if e.Action == action {
			out = append(out, e)
		}
	}
	return out
}

// mustBind binds and fails the test on an error.
func mustBind(t *testing.T, b *bindings.Bindings, in bindings.Instance, cc *policy.ConflictClass, ds string) bindings.Binding {
	t.Helper()
	got, err := b.Bind(ctx, in, cc, ds)
	if err != nil {
		t.Fatalf("bind %s/%s to %s: %v", in.Namespace, in.Name, ds, err)
	}
	return got
}

// mustCheck checks and fails the test unless the outcome is want.
func mustCheck(t *testing.T, b *bindings.Bindings, in bindings.Instance, cc *policy.ConflictClass, ds string, want bindings.Outcome) bindings.Verdict {
	t.Helper()
	v, err := b.Check(ctx, in, cc, ds)
	if err != nil {
		t.Fatalf("check %s/%s to %s: %v", in.Namespace, in.Name, ds, err)
	}
	if v.Outcome != want {
		t.Fatalf("check %s/%s to %s: %s (%+v), want %s", in.Namespace, in.Name, ds, v.Outcome, v.Binding, want)
	}
	return v
}
