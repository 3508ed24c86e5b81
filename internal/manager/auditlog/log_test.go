package auditlog_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/manager/auditlog"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "bulkhead.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// alerts records the alerts a Log raises.
type alerts struct {
	mu    sync.Mutex
	kinds []string
}

func (a *alerts) raise(kind, _, _ string) {
	a.mu.Lock()
	a.kinds = append(a.kinds, kind)
	a.mu.Unlock()
}

func (a *alerts) has(kind string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, k := range a.kinds {
		if k == kind {
			return true
		}
	}
	return false
}

func newLog(t *testing.T, st store.Store, dir string, al *alerts) *auditlog.Log {
	t.Helper()
	l := auditlog.New(auditlog.Config{Store: st, Dir: dir, Alert: al.raise, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err := l.LoadHead(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))); err != nil {
		t.Fatal(err)
	}
	return l
}

func entry(i int) auditlog.Entry {
	return auditlog.Entry{Actor: auditlog.System, Action: "test.write", Object: fmt.Sprintf("k%d", i), Detail: map[string]int{"i": i}}
}

// Two managers writing one store at once chain their entries onto each
// other's, and each change is committed with its entry.
func TestCommitChainsOntoOtherManagers(t *testing.T) {
	st := openStore(t)
	var al alerts
	logs := []*auditlog.Log{newLog(t, st, t.TempDir(), &al), newLog(t, st, t.TempDir(), &al)}
	const each = 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*each)
	for n, l := range logs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				key := fmt.Sprintf("test/%d-%d", n, i)
				if _, ok, err := l.Commit(context.Background(), []store.Cond{store.Absent(key)}, []store.Op{store.Put(key, []byte("v"))}, entry(i)); err != nil || !ok {
					errs <- fmt.Errorf("commit %s: ok %v, %v", key, ok, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	entries, err := logs[0].Verified(context.Background(), nil)
	if err != nil || len(entries) != 2*each {
		t.Fatalf("the log: %d entries, %v; want %d that verify", len(entries), err, 2*each)
	}
}

// A change whose condition no longer holds is not written, nor its entry.
func TestCommitLostCondition(t *testing.T) {
	st := openStore(t)
	var al alerts
	l := newLog(t, st, t.TempDir(), &al)
	ctx := context.Background()
	if _, ok, err := l.Commit(ctx, nil, []store.Op{store.Put("test/a", []byte("1"))}, entry(1)); err != nil || !ok {
		t.Fatalf("first commit: %v %v", ok, err)
	}
	_, ok, err := l.Commit(ctx, []store.Cond{store.Absent("test/a")}, []store.Op{store.Put("test/a", []byte("2"))}, entry(2))
	if err != nil || ok {
		t.Fatalf("commit on a lost condition: ok %v, %v; want false and no error", ok, err)
	}
	if entries, _ := audit.Read(ctx, st); len(entries) != 1 {
		t.Fatalf("%d entries, want 1", len(entries))
	}
}

// The head a manager kept in its data directory finds a log cut short
// below it, when the manager starts again, and raises an alert; a head
// file changed by hand anchors nothing and raises one too.
func TestHeadAnchorsTheLog(t *testing.T) {
	dir := t.TempDir()
	var al alerts
	l := newLog(t, openStore(t), dir, &al)
	for i := range 3 {
		if _, _, err := l.Commit(context.Background(), nil, nil, entry(i)); err != nil {
			t.Fatal(err)
		}
	}
	l.SaveHead()
	// Another store with a shorter log: what a store rolled back shows.
	short := openStore(t)
	if _, _, err := newLog(t, short, t.TempDir(), &al).Commit(context.Background(), nil, nil, entry(0)); err != nil {
		t.Fatal(err)
	}
	again := newLog(t, short, dir, &al)
	var broken *audit.BrokenError
	if _, err := again.Verified(context.Background(), nil); !errors.As(err, &broken) {
		t.Fatalf("Verified of a log below the kept head = %v, want a BrokenError", err)
	}
	if !al.has("audit-broken") {
		t.Fatalf("alerts %v, want audit-broken", al.kinds)
	}

	if err := os.WriteFile(filepath.Join(dir, auditlog.HeadFile), []byte(`{"seq":99}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var fresh alerts
	if _, err := newLog(t, short, dir, &fresh).Verified(context.Background(), nil); err != nil {
		t.Fatalf("a changed head file anchored the log: %v", err)
	}
	if !fresh.has("audit-head") {
		t.Fatalf("alerts %v, want audit-head", fresh.kinds)
	}
}

func TestSignedHeadVerifies(t *testing.T) {
	var al alerts
	l := newLog(t, openStore(t), t.TempDir(), &al)
	sh := l.Sign(audit.Head{Seq: 3, Hash: strings.Repeat("ab", 32)})
	if err := sh.Check(); err != nil || sh.Seq != 3 {
		t.Fatalf("signed head %+v: %v", sh, err)
	}
}

// Refusals are audited in a burst, then at a rate; the rest are counted
// and the count goes with the next one audited.
func TestRefusalsAtABoundedRate(t *testing.T) {
	var al alerts
	l := newLog(t, openStore(t), t.TempDir(), &al)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	taken := 0
	for range 30 {
		if ok, _ := l.TakeRefusal(now); ok {
			taken++
		}
	}
	if taken != 20 {
		t.Fatalf("%d of 30 refusals at once audited, want the burst of 20", taken)
	}
	ok, suppressed := l.TakeRefusal(now.Add(5 * time.Second))
	if !ok || suppressed != 10 {
		t.Fatalf("a refusal after the interval: %v with %d suppressed, want true with 10", ok, suppressed)
	}
	l.GiveBackRefusals(suppressed + 1) // its entry was not written
	if ok, suppressed = l.TakeRefusal(now.Add(10 * time.Second)); !ok || suppressed != 11 {
		t.Fatalf("after a give-back: %v with %d suppressed, want true with 11", ok, suppressed)
	}
}
