package manager_test

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

// TestConcurrentFirstReports: agents reporting at once, through two
// managers over one store, workloads whose label sets are mostly new and
// shared between them: every report is stored at the first try (no 503),
// and each label set has one identity everywhere.
func TestConcurrentFirstReports(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bulkhead.db")
	open := func() store.Store {
		st, err := boltstore.Open(path, boltstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	e1 := startOn(t, open(), filepath.Join(dir, "m1"))
	e2 := startOn(t, open(), filepath.Join(dir, "m2"))
	e2.admin = e2.client(e1.m.AdminToken())

	const agents, per = 24, 60
	clients := make([]*client.Client, agents)
	for i := range clients {
		e := e1
		if i%2 == 1 {
			e = e2
		}
		clients[i], _ = e.join(fmt.Sprintf("node-%02d", i))
	}
	results := make([]api.ReportResult, agents)
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws := make([]api.HostWorkload, per)
			for j := range ws {
				n := i*per + j
				// Most label sets shared by all, a tenth each agent's own.
				app := fmt.Sprintf("shared-%d", j)
				if j%10 == 0 {
					app = fmt.Sprintf("own-%d-%d", i, j)
				}
				ws[j] = api.HostWorkload{Namespace: fmt.Sprintf("ns%d", j%3), Name: fmt.Sprintf("w%d", n),
					Labels: map[string]string{"app": app}, IPs: []string{fmt.Sprintf("10.1.%d.%d", n/250, n%250+1)}}
			}
			var err error
			results[i], err = c.ReportWorkloads(ctx(t), fmt.Sprintf("node-%02d", i), ws, nil, true)
			if err != nil {
				t.Errorf("agent %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	byLabels := map[string]uint32{}
	ids := map[uint32]string{}
	for _, r := range results {
		for _, wl := range r.Workloads {
			k := wl.Namespace + "/" + wl.Labels["app"]
			if id, ok := byLabels[k]; ok && id != wl.Identity {
				t.Fatalf("labels %s have identities %d and %d", k, id, wl.Identity)
			}
			if other, ok := ids[wl.Identity]; ok && other != k {
				t.Fatalf("identity %d is given to %s and %s", wl.Identity, other, k)
			}
			byLabels[k], ids[wl.Identity] = wl.Identity, k
		}
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		list, err := e2.admin.Identities(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) == len(byLabels) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d identities listed, %d label sets reported", len(list.Items), len(byLabels))
		}
	}
}
