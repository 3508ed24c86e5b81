package manager_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

// failingStore fails every Txn that would move the head: the commit of a
// change, after its objects were written.
type failingStore struct{ store.Store }

func (f failingStore) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, bool, error) {
	for _, op := range ops {
		if op.Key == "feed/head" {
			return 0, false, fmt.Errorf("injected failure")
		}
	}
	return f.Store.Txn(ctx, conds, ops)
}

func TestFailedCommitChangesNothing(t *testing.T) {
	dir := t.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := startOn(t, st, dir)
	first, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: docs(t, examplePolicies[:3]...)})
	if err != nil {
		t.Fatal(err)
	}
	e.m.Close()

	broken := startOn(t, failingStore{st}, dir)
	_, err = broken.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: docs(t, examplePolicies[3])})
	wantStatus(t, err, http.StatusInternalServerError, "injected failure")
	revs, _ := broken.admin.Revisions(ctx(t), 0)
	objs, _ := broken.admin.Objects(ctx(t), "")
	if revs.Head != first.Revision || len(revs.Items) != 1 || objs.Revision != first.Revision || len(objs.Items) != len(first.Created) {
		t.Fatalf("a failed commit changed the head: %+v, %d objects", revs, len(objs.Items))
	}
	if v, err := broken.admin.VerifyAudit(ctx(t)); err != nil || !v.OK {
		t.Fatalf("audit after a failed commit: %+v %v", v, err)
	}
}

// TestKilledMidApply kills a manager process while it applies large
// changes, again and again, and checks that what it leaves is a whole
// revision: the head's objects all load, and the audit chain verifies.
func TestKilledMidApply(t *testing.T) {
	if os.Getenv("BH_CRASH_DIR") != "" {
		t.Skip("the child's own run")
	}
	dir := t.TempDir()
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.v")
		cmd.Env = append(os.Environ(), "BH_CRASH_DIR="+dir, fmt.Sprintf("BH_CRASH_ROUND=%d", round))
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill it once it has applied once, at a different point of a
		// later apply each round.
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(out.String(), "applied 1 ") && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		var took time.Duration
		text := out.String()
		if i := strings.Index(text, "applied 1 "); i >= 0 {
			fmt.Sscanf(text[i+len("applied 1 "):], "%d", &took)
		}
		time.Sleep(time.Duration(round+1) * took / 4)
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		if !strings.Contains(out.String(), "applying") {
			t.Fatalf("the child did not start applying:\n%s", out)
		}

		st, err := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		e := startOn(t, st, dir)
		revs, err := e.admin.Revisions(ctx(t), 0)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := e.admin.Objects(ctx(t), "")
		if err != nil {
			t.Fatalf("round %d: the head does not load: %v", round, err)
		}
		if objs.Revision != revs.Head || (revs.Head != 0 && len(objs.Items) != revs.Items[0].Objects) {
			t.Fatalf("round %d: head %d with %d objects, revision record %+v", round, revs.Head, len(objs.Items), revs.Items)
		}
		if v, err := e.admin.VerifyAudit(ctx(t)); err != nil || !v.OK {
			t.Fatalf("round %d: audit: %+v %v", round, v, err)
		}
		t.Logf("round %d: killed at %d revisions, head %d with %d objects", round, len(revs.Items), revs.Head, len(objs.Items))
		e.m.Close()
		st.Close()
	}
}

// syncBuffer is a buffer the child's output goroutine writes while the
// test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestCrashChild is the child of TestKilledMidApply: a manager applying
// big changes until it is killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("BH_CRASH_DIR")
	if dir == "" {
		t.Skip("run by TestKilledMidApply")
	}
	st, err := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := startOn(t, st, dir)
	fmt.Println("applying")
	var round int
	fmt.Sscan(os.Getenv("BH_CRASH_ROUND"), &round)
	for i := 1; ; i++ {
		var b strings.Builder
		for j := range 1500 {
			fmt.Fprintf(&b, "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: s%d}\nspec: {cidrs: [{cidr: 10.%d.%d.0/24}]}\n---\n", j, (10*round+i)%200, j%250)
		}
		start := time.Now()
		if _, err := e.admin.Apply(context.Background(), api.ManagerApplyRequest{Documents: doc("big.yaml", b.String())}); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("applied %d %d\n", i, time.Since(start))
	}
}
