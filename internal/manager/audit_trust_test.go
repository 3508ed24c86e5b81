package manager_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/manager"
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

// A policy revision written into the store by hand (a record and a head
// that name objects no manager committed) is not served: revision records
// are sealed under the manager key.
func TestHandWrittenRevisionIsNotServed(t *testing.T) {
	e := start(t)
	if _, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("wall.yaml", denyPolicy)}); err != nil {
		t.Fatal(err)
	}
	kv, err := e.st.Get(ctx(t), "feed/head")
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		t.Fatal(err)
	}
	rec["seq"], rec["parentRev"], rec["message"] = rec["seq"].(float64)+1, kv.ModRev, "by hand"
	forged, _ := json.Marshal(rec)
	if _, _, err := e.st.Txn(ctx(t), nil, []store.Op{store.Put("feed/head", forged), store.Put("revisions/00000000000000000002", forged)}); err != nil {
		t.Fatal(err)
	}
	e = e.restart()
	_, err = e.admin.Objects(ctx(t), "")
	wantStatus(t, err, http.StatusInternalServerError, "seal does not verify")
	if al := alerts(t, e); len(al) == 0 || al[0].Kind != "revision-seal" {
		t.Fatalf("alerts: %+v", al)
	}
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
	for name, typ := range map[string]any{"Alert": api.Alert{}, "AlertList": api.AlertList{},
		"JoinTokenInfo": api.JoinTokenInfo{}, "JoinTokenList": []api.JoinTokenInfo{}, "HostRevocation": api.HostRevocation{},
		"AuditHead": api.AuditHead{}} {
		schemaTypes[name] = typ
	}
}

// auditFrom returns the entries after seq from.
func auditFrom(t *testing.T, e *env, from uint64) []api.AuditEntry {
	t.Helper()
	list, err := e.admin.Audit(ctx(t), from+1, 10000)
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func auditHead(t *testing.T, e *env) uint64 {
	t.Helper()
	v, err := e.admin.VerifyAudit(ctx(t))
	if err != nil || !v.OK {
		t.Fatalf("verify: %+v %v", v, err)
	}
	return v.Entries
}

// Every refusal of authentication or authorization is audited: who (as
// far as known), from where, what they asked for, and why it was refused.
func TestRefusalsAreAudited(t *testing.T) {
	e := start(t)
	operator := e.token("bob", api.RoleOperator)
	agent, creds := e.join("node-1")
	if _, err := e.admin.RevokeCertificate(ctx(t), creds.Serial); err != nil {
		t.Fatal(err)
	}
	agent2, _ := e.join("node-2")
	before := auditHead(t, e)

	refusals := []func() error{
		func() error { _, err := e.client("").Objects(ctx(t), ""); return err },
		func() error { _, err := e.client("bh_guessed").Objects(ctx(t), ""); return err },
		func() error { _, err := operator.CreateToken(ctx(t), "mallory", api.RoleAdmin); return err },
		func() error { _, err := operator.Audit(ctx(t), 1, 1); return err },
		func() error { _, err := agent.Hosts(ctx(t)); return err },
		func() error { _, err := agent2.Apply(ctx(t), api.ManagerApplyRequest{}); return err },
		func() error {
			return e.client("").Do(ctx(t), "POST", "/v1/join", api.JoinRequest{Token: "bhj_guessed", CSR: "x"}, nil)
		},
	}
	for i, f := range refusals {
		if s := status(f()); s != http.StatusUnauthorized && s != http.StatusForbidden {
			t.Fatalf("refusal %d: status %d", i, s)
		}
	}
	var got []api.AuditEntry
	for _, it := range auditFrom(t, e, before) {
		if strings.HasSuffix(it.Action, ".refused") {
			got = append(got, it)
		}
	}
	if len(got) != len(refusals) {
		t.Fatalf("%d refusals, %d audited: %+v", len(refusals), len(got), got)
	}
	want := []struct{ action, actor, object, detail string }{
		{"auth.refused", "anonymous:127.0.0.1", "GET /v1/objects", `"reason":"authentication required`},
		{"auth.refused", "anonymous:127.0.0.1", "GET /v1/objects", `"credential":"Bearer sha256:` + hashPrefix("bh_guessed")},
		{"access.refused", "token:bob", "POST /v1/tokens", `"status":403`},
		{"access.refused", "token:bob", "GET /v1/audit", `may not`},
		{"access.refused", "anonymous:127.0.0.1", "GET /v1/hosts", `"credential":"certificate ` + creds.Serial + ` host:node-1"`},
		{"access.refused", "agent:node-2", "POST /v1/apply", `host:node-2 may not`},
		{"auth.refused", "anonymous:127.0.0.1", "POST /v1/join", `"credential":"join token sha256:` + hashPrefix("bhj_guessed")},
	}
	for i, w := range want {
		g := got[i]
		var detail bytes.Buffer
		_ = json.Compact(&detail, g.Detail)
		if g.Action != w.action || g.Actor.Kind+":"+g.Actor.Name != w.actor || g.Object != w.object ||
			!strings.Contains(detail.String(), w.detail) || !strings.Contains(detail.String(), `"remote":"127.0.0.1"`) {
			t.Errorf("refusal %d: got %s %s:%s %s %s; want %+v", i, g.Action, g.Actor.Kind, g.Actor.Name, g.Object, detail.String(), w)
		}
	}
}

func hashPrefix(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])[:16]
}

// A flood of refused requests cannot fill the store: past a burst they are
// counted, and the count is recorded with the next refusal audited.
func TestRefusalFloodIsBounded(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	e := start(t, func(c *manager.Config) { c.Now = func() time.Time { return time.Unix(0, clock.Load()) } })
	before := auditHead(t, e)
	const flood = 300
	anon := e.client("bh_flood")
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range flood / 6 {
				if _, err := anon.Hosts(ctx(t)); status(err) != http.StatusUnauthorized {
					t.Errorf("worker %d: %v", w, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	written := len(auditFrom(t, e, before))
	if written < 10 || written > 25 {
		t.Fatalf("a flood of %d refusals wrote %d audit entries; want about 20", flood, written)
	}
	clock.Add(int64(time.Minute))
	if _, err := anon.Hosts(ctx(t)); status(err) != http.StatusUnauthorized {
		t.Fatal(err)
	}
	entries := auditFrom(t, e, before)
	var d struct{ SuppressedBefore int }
	if err := json.Unmarshal(entries[len(entries)-1].Detail, &d); err != nil {
		t.Fatal(err)
	}
	if d.SuppressedBefore+len(entries) != flood+1 {
		t.Fatalf("%d entries and %d suppressed, for %d refusals", len(entries), d.SuppressedBefore, flood+1)
	}
}
func signedHead(t *testing.T, e *env) audit.SignedHead {
	t.Helper()
	var h api.AuditHead
	if err := e.admin.Do(ctx(t), "GET", "/v1/audit/head", nil, &h); err != nil {
		t.Fatal(err)
	}
	return audit.SignedHead(h)
}

// rewrite replaces the log in the store from entry from on: entries
// changed by change and re-sealed, the last drop dropped, the head key
// moved to the new end, as someone with the store (and this package)
// could; one Txn per entry, in order, so that their revisions increase.
func rewrite(t *testing.T, st store.Store, from uint64, drop int, change func(*audit.Entry)) {
	t.Helper()
	entries, err := audit.Read(ctx(t), st)
	if err != nil {
		t.Fatal(err)
	}
	var ops []store.Op
	for _, e := range entries[len(entries)-drop:] {
		ops = append(ops, store.Delete(fmt.Sprintf("audit/log/%020d", e.Seq)))
	}
	entries = entries[:len(entries)-drop]
	prev := audit.Head{}
	for i := range entries {
		if entries[i].Seq >= from {
			change(&entries[i])
			sealed, err := audit.Seal(prev, entries[i])
			if err != nil {
				t.Fatal(err)
			}
			entries[i] = sealed
			value, _ := json.Marshal(sealed)
			ops = append(ops, store.Put(fmt.Sprintf("audit/log/%020d", sealed.Seq), value))
		}
		prev = audit.Head{Seq: entries[i].Seq, Hash: entries[i].Hash}
	}
	head, _ := json.Marshal(prev)
	ops = append(ops, store.Put("audit/head", head))
	for _, op := range ops {
		if _, _, err := st.Txn(ctx(t), nil, []store.Op{op}); err != nil {
			t.Fatal(err)
		}
	}
}

// clientVerify verifies the log as the manager serves it against a head,
// on the client's side.
func clientVerify(t *testing.T, e *env, anchor audit.SignedHead) error {
	t.Helper()
	if err := anchor.Check(); err != nil {
		t.Fatal(err)
	}
	var entries []audit.Entry
	for _, it := range auditFrom(t, e, 0) {
		var detail bytes.Buffer
		if len(it.Detail) > 0 {
			_ = json.Compact(&detail, it.Detail)
		}
		entries = append(entries, audit.Entry{Seq: it.Seq, Time: it.Time, Actor: audit.Actor(it.Actor), Action: it.Action,
			Object: it.Object, Detail: detail.Bytes(), Revision: it.Revision, PrevHash: it.PrevHash, Hash: it.Hash})
	}
	h := anchor.Head()
	return audit.Verify(entries, &h)
}

// A re-sealed log and a truncated log are whole chains, but neither passes
// through a head signed before: not the one an auditor kept, nor the one
// the manager kept outside the store; and the manager signs no head of
// them.
func TestAuditAnchorsFindResealAndTruncation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		from   uint64
		drop   int
		change func(*audit.Entry)
		want   string
	}{
		{"resealed", 2, 0, func(e *audit.Entry) {
			if e.Seq == 2 {
				e.Object = "token/someone-else"
			}
		}, "rewritten up to here"},
		{"truncated", 1 << 62, 2, func(*audit.Entry) {}, "cut short"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t)
			for _, name := range []string{"alice", "bob", "carol"} {
				e.token(name, api.RoleAuditor)
			}
			kept := signedHead(t, e)
			if kept.Seq != 4 || kept.KeyID == "" {
				t.Fatalf("signed head: %+v", kept)
			}
			if err := clientVerify(t, e, kept); err != nil {
				t.Fatalf("untouched: %v", err)
			}
			e = e.restart() // the manager's own head is written out
			rewrite(t, e.st, tc.from, tc.drop, tc.change)

			if err := clientVerify(t, e, kept); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("against the head kept: %v", err)
			}
			v, err := e.admin.VerifyAudit(ctx(t))
			if err != nil || v.OK || !strings.Contains(v.Problem, tc.want) {
				t.Fatalf("the manager's verify: %+v %v", v, err)
			}
			err = e.admin.Do(ctx(t), "GET", "/v1/audit/head", nil, nil)
			wantStatus(t, err, http.StatusConflict, "signs no head")
			if al := alerts(t, e); len(al) == 0 || al[0].Kind != "audit-broken" {
				t.Fatalf("alerts: %+v", al)
			}
			// Restarted on the rewritten store, the manager finds it at once.
			e = e.restart()
			if al := alerts(t, e); len(al) == 0 || al[0].Kind != "audit-broken" {
				t.Fatalf("alerts at start: %+v", al)
			}
		})
	}
}
