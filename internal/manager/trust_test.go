package manager_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// restart closes e's manager and starts another over the same store and
// data directory, with empty caches: what a tampered stopped store meets.
func (e *env) restart() *env {
	e.t.Helper()
	e.m.Close()
	return startOn(e.t, e.st, e.dir)
}

func alerts(t *testing.T, e *env) []api.Alert {
	t.Helper()
	var list api.AlertList
	if err := e.admin.Do(ctx(t), "GET", "/v1/alerts", nil, &list); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// auditActions returns the action of every audit entry, in order.
func auditActions(t *testing.T, e *env) []string {
	t.Helper()
	list, err := e.admin.Audit(ctx(t), 1, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, it := range list.Items {
		out = append(out, it.Action)
	}
	return out
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

const denyPolicy = `apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: wall, namespace: trading}
spec:
  tier: application
  priority: 100
  appliesTo: {selector: {matchLabels: {role: database, side: buy}}}
  ingress:
    - name: no-sell-side
      action: deny
      from: [{selector: {matchLabels: {side: sell}}}]
`

// An in-place edit of a stored blob (deny → allow) is never served: every
// blob is checked against its name on read, the manager answers an error
// that says so, and raises an alert (log, audit entry, GET /v1/alerts).
func TestTamperedBlobIsNotServed(t *testing.T) {
	e := start(t)
	if _, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("wall.yaml", denyPolicy)}); err != nil {
		t.Fatal(err)
	}
	kvs, _, err := e.st.List(ctx(t), "blobs/")
	if err != nil {
		t.Fatal(err)
	}
	var edited string
	for _, kv := range kvs {
		if s := string(kv.Value); strings.Contains(s, `"deny"`) {
			edited = kv.Key
			if _, _, err := e.st.Txn(ctx(t), nil, []store.Op{store.Put(kv.Key, []byte(strings.ReplaceAll(s, `"deny"`, `"allow"`)))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if edited == "" {
		t.Fatal("no stored blob holds the deny rule")
	}
	e = e.restart()
	_, err = e.admin.Objects(ctx(t), "")
	wantStatus(t, err, http.StatusInternalServerError, "changed outside the manager")
	_, err = e.admin.Diff(ctx(t), 0, 0)
	wantStatus(t, err, http.StatusInternalServerError, edited)
	al := alerts(t, e)
	if len(al) != 1 || al[0].Kind != "blob-mismatch" || al[0].Object != edited {
		t.Fatalf("alerts: %+v", al)
	}
	waitFor(t, func() bool { return has(auditActions(t, e), "alert.blob-mismatch") })
}

// waitFor waits, at most 10 s, until cond holds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func init() {
	// The schemas this file's routes added to api/openapi.yaml.
	for name, typ := range map[string]any{"Alert": api.Alert{}, "AlertList": api.AlertList{}} {
		schemaTypes[name] = typ
	}
}
