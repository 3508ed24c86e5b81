package manager_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
)

// TestStatusReportsAreSoftState: status reports are answered from
// memory and seen at once; the reports of a moment are written to the
// store together (a Txn per 100 hosts, not one per report), and a
// manager started later over the same store finds them.
func TestStatusReportsAreSoftState(t *testing.T) {
	e := start(t)
	const hosts = 24
	agents := make([]*client.Client, hosts)
	for i := range agents {
		agents[i], _ = e.join(fmt.Sprintf("node-%02d", i))
	}
	before, err := e.st.Rev(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.ReportStatus(ctx(t), fmt.Sprintf("node-%02d", i), api.HostStatus{Realized: 77, Health: "ok"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// Seen at once by this manager.
	list, err := e.admin.Hosts(ctx(t))
	if err != nil || len(list.Items) != hosts {
		t.Fatalf("hosts: %+v %v", list, err)
	}
	for _, h := range list.Items {
		if h.Realized != 77 || h.Health != "ok" || h.LastSeen.IsZero() {
			t.Fatalf("host right after its report: %+v", h)
		}
	}
	// Written within a flush, in few Txns.
	var kvs int
	for deadline := time.Now().Add(5 * time.Second); kvs < hosts; time.Sleep(20 * time.Millisecond) {
		got, _, err := e.st.List(ctx(t), "hosts/")
		if err != nil {
			t.Fatal(err)
		}
		if kvs = len(got); time.Now().After(deadline) {
			t.Fatalf("%d of %d host statuses written after 5 s", kvs, hosts)
		}
	}
	after, _ := e.st.Rev(ctx(t))
	if after-before > 4 {
		t.Fatalf("%d status reports took %d store revisions; want them written together", hosts, after-before)
	}
	// A report that says nothing new writes nothing: once a later report
	// of another host is in the store (written in the same flush as the
	// repeat, or a later one), the repeated host's record is as it was.
	first, err := e.st.Get(ctx(t), "hosts/node-00")
	if err != nil {
		t.Fatal(err)
	}
	if err := agents[0].ReportStatus(ctx(t), "node-00", api.HostStatus{Realized: 77, Health: "ok"}); err != nil {
		t.Fatal(err)
	}
	if err := agents[1].ReportStatus(ctx(t), "node-01", api.HostStatus{Realized: 78, Health: "ok"}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		kv, err := e.st.Get(ctx(t), "hosts/node-01")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(kv.Value), `"realized":78`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node-01's new status not written after 5 s: %s", kv.Value)
		}
	}
	if now, err := e.st.Get(ctx(t), "hosts/node-00"); err != nil || now.ModRev != first.ModRev {
		t.Fatalf("a repeated status rewrote the host's record (revision %d -> %d): %v", first.ModRev, now.ModRev, err)
	}

	// A manager started later over the same store sees them.
	e.m.Close()
	e2 := startOn(t, e.st, t.TempDir())
	e2.admin = e2.client(e.m.AdminToken())
	list, err = e2.admin.Hosts(ctx(t))
	if err != nil || len(list.Items) != hosts || list.Items[hosts-1].Realized != 77 {
		t.Fatalf("hosts after a restart: %+v %v", list, err)
	}
}
