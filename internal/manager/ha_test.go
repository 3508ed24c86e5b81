package manager_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

// TestTwoManagersOneStore runs two managers over one store, as two
// managers over one etcd: one CA, one admin token, concurrent applies
// that all land (retried on the head's compare-and-set), and either
// manager's feed sees the other's changes.
func TestTwoManagersOneStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bulkhead.db")
	testTwoManagers(t, dir, func() store.Store {
		st, err := boltstore.Open(path, boltstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	})
}

// testTwoManagers runs two managers over the store open returns handles
// of, each with a data directory of its own.
func testTwoManagers(t *testing.T, dir string, open func() store.Store) {
	e1 := startOn(t, open(), filepath.Join(dir, "m1"))
	e2 := startOn(t, open(), filepath.Join(dir, "m2"))
	if !bytes.Equal(e1.m.CAPEM(), e2.m.CAPEM()) {
		t.Fatal("two managers over one store have different CAs")
	}
	if e2.m.AdminToken() != "" {
		t.Fatal("the second manager made a second first admin token")
	}
	// The first manager's admin token works on the second.
	e2.admin = e2.client(e1.m.AdminToken())

	agent, _ := e2.join("node-1") // joined through m2
	fr := watch(t, agent, 0)
	fr.until(t, func(ev api.FeedEvent) bool { return ev.Type == api.FeedRev })

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := e1.admin
			if i%2 == 1 {
				c = e2.admin
			}
			seg := fmt.Sprintf("apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: s%d}\nspec: {cidrs: [{cidr: 10.%d.0.0/16}]}\n", i, i)
			_, err := c.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc(fmt.Sprintf("s%d.yaml", i), seg)})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent apply: %v", err)
		}
	}
	revs, err := e2.admin.Revisions(ctx(t), 0)
	if err != nil || len(revs.Items) != 20 {
		t.Fatalf("20 concurrent applies on two managers made %d revisions: %v", len(revs.Items), err)
	}
	segs, _ := e1.admin.Objects(ctx(t), "segments")
	if len(segs.Items) != 20 {
		t.Fatalf("%d segments, want 20: an apply was lost", len(segs.Items))
	}
	evs := fr.until(t, revAtLeast(revs.Head))
	if n := count(evs, api.FeedObject, "put"); n != 20 {
		t.Fatalf("the feed of m2 showed %d object puts, want 20", n)
	}
	if v, err := e1.admin.VerifyAudit(ctx(t)); err != nil || !v.OK {
		t.Fatalf("audit: %+v %v", v, err)
	}

	// The agent reports to m2 what it realized; apply --wait on m1 sees it.
	go func() {
		for ev := range fr.events {
			if ev.Type == api.FeedRev {
				_ = agent.ReportStatus(context.Background(), "node-1", api.HostStatus{Realized: ev.Rev, Health: "ok"})
			}
		}
	}()
	seg := "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: last}\nspec: {cidrs: [{cidr: 10.99.0.0/16}]}\n"
	res, err := e1.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("last.yaml", seg), Wait: "10s"})
	if err != nil || len(res.NotRealized) != 0 || len(res.Realized) != 1 {
		t.Fatalf("apply --wait on m1 for a host that reports to m2: %+v %v", res, err)
	}
}
