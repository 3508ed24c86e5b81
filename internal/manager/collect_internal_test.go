package manager

import (
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
)

// TestCollectIdentities: an identity no workload uses is removed, and its
// labels get a new number when they come back; an identity a report uses
// while the collector decides is kept.
func TestCollectIdentities(t *testing.T) {
	m, st, ctx := newInternal(t, Config{})
	m.run()
	defer m.Close()
	report := func(host string, ws ...api.HostWorkload) []api.HostWorkload {
		t.Helper()
		_, out, _, err := m.writeWorkloads(ctx, system, host, ws, nil, true, nil)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	web := api.HostWorkload{Namespace: "shop", Name: "web", Labels: map[string]string{"app": "web"}, IPs: []string{"10.0.0.1"}}
	db := api.HostWorkload{Namespace: "shop", Name: "db", Labels: map[string]string{"app": "db"}, IPs: []string{"10.0.0.2"}}
	first := report("node-1", web, db)
	webID, dbID := first[0].Identity, first[1].Identity
	identities := func() map[uint32]bool {
		kvs, _, err := st.List(ctx, prefixIdentities)
		if err != nil {
			t.Fatal(err)
		}
		out := map[uint32]bool{}
		for _, kv := range kvs {
			if id, err := decodeAs[api.Identity]("identity")(kv); err == nil {
				out[id.ID] = true
			}
		}
		return out
	}

	// db goes away; while the collector decides, node-2 reports a
	// workload with db's labels: db's identity must stay.
	report("node-1", web)
	m.collectHook = func() {
		m.collectHook = nil
		db2 := db
		db2.Name, db2.IPs = "db-2", []string{"10.0.0.3"}
		if got := report("node-2", db2); got[0].Identity != dbID {
			t.Errorf("db-2 got identity %d, want db's %d", got[0].Identity, dbID)
		}
	}
	m.collectIdentities(ctx)
	if ids := identities(); !ids[webID] || !ids[dbID] {
		t.Fatalf("identities after a collection racing a report: %v; want %d and %d", ids, webID, dbID)
	}

	// Now nobody uses it: removed; the labels back get a new number.
	report("node-2")
	m.collectIdentities(ctx)
	if ids := identities(); !ids[webID] || ids[dbID] {
		t.Fatalf("identities after collecting: %v; want %d only", ids, webID)
	}
	again := report("node-1", web, db)
	if again[0].Identity != webID || again[1].Identity <= dbID {
		t.Fatalf("after collection: web %d (want %d), db %d (want a new number above %d)", again[0].Identity, webID, again[1].Identity, dbID)
	}
}
