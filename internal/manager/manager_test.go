package manager_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
	"github.com/bulkhead-dev/bulkhead/internal/store/etcdstore/etcdtest"
)

// env is one manager on 127.0.0.1 with a bolt store in a temporary
// directory, and an admin client.
type env struct {
	t     *testing.T
	m     *manager.Manager
	st    store.Store
	dir   string
	admin *client.Client
}

func quiet() *slog.Logger {
	if os.Getenv("BULKHEAD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// start starts a manager over a new bolt store, or over a new etcd with
// BULKHEAD_TEST_STORE=etcd (embedded) or etcd-server (a separate etcd
// process): the whole suite then runs on etcd.
func start(t *testing.T, opts ...func(*manager.Config)) *env {
	t.Helper()
	dir := t.TempDir()
	switch os.Getenv("BULKHEAD_TEST_STORE") {
	case "etcd":
		return startOn(t, etcdStore(t, startEtcd(t)), dir, opts...)
	case "etcd-server":
		return startOn(t, etcdStore(t, etcdtest.StartCluster(t, etcdtest.Options{}).Endpoints()...), dir, opts...)
	}
	st, err := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return startOn(t, st, dir, opts...)
}

func startOn(t *testing.T, st store.Store, dir string, opts ...func(*manager.Config)) *env {
	t.Helper()
	shareKey(t, dir)
	cfg := manager.Config{Store: st, DataDir: dir, Listen: "127.0.0.1:0", Logger: quiet(), Heartbeat: 200 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := manager.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := m.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, m: m, st: st, dir: dir}
	e.admin = e.client(m.AdminToken())
	return e
}

func (e *env) client(token string) *client.Client {
	e.t.Helper()
	c, err := client.New(client.Config{URL: e.m.URL(), CA: e.m.CAPEM(), Token: token})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) token(name, role string) *client.Client {
	e.t.Helper()
	tok, err := e.admin.CreateToken(ctx(e.t), name, role)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.client(tok.Secret)
}

// join makes an agent for host and returns its client and credentials.
func (e *env) join(host string) (*client.Client, *client.Credentials) {
	e.t.Helper()
	jt, err := e.admin.CreateJoinToken(ctx(e.t), host, time.Minute)
	if err != nil {
		e.t.Fatal(err)
	}
	creds, err := client.Join(ctx(e.t), e.m.URL(), nil, jt.CAHash, jt.Secret, host)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := creds.Client(e.m.URL())
	if err != nil {
		e.t.Fatal(err)
	}
	return c, creds
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func status(err error) int {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Status
	}
	return 0
}

func wantStatus(t *testing.T, err error, code int, contains string) {
	t.Helper()
	if status(err) != code {
		t.Fatalf("got %v, want HTTP %d", err, code)
	}
	if contains != "" && !strings.Contains(err.Error(), contains) {
		t.Fatalf("error %q does not say %q", err, contains)
	}
}

func docs(t *testing.T, paths ...string) []api.Document {
	t.Helper()
	var out []api.Document
	for _, p := range paths {
		data, err := os.ReadFile(filepath.Join("../..", p))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, api.Document{Name: p, Data: string(data)})
	}
	return out
}

func doc(name, data string) []api.Document { return []api.Document{{Name: name, Data: data}} }

var examplePolicies = []string{"examples/policies/00-baseline.yaml", "examples/policies/10-segments.yaml",
	"examples/policies/20-trading.yaml", "examples/policies/30-payments.yaml"}

func TestHealthAndAuthentication(t *testing.T) {
	e := start(t)
	anon := e.client("")
	if err := anon.Do(ctx(t), "GET", "/healthz", nil, nil); err != nil {
		t.Fatalf("healthz without a token: %v", err)
	}
	if err := anon.Do(ctx(t), "GET", "/readyz", nil, nil); err != nil {
		t.Fatalf("readyz without a token: %v", err)
	}
	_, err := anon.Objects(ctx(t), "")
	wantStatus(t, err, http.StatusUnauthorized, "authentication required")
	_, err = e.client("bh_not-a-token").Objects(ctx(t), "")
	wantStatus(t, err, http.StatusUnauthorized, "unknown or revoked")

	// The first admin token is in the data directory, 0600.
	st, err := os.Stat(filepath.Join(e.dir, manager.AdminTokenFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v, mode %v", err, st.Mode())
	}

	auditor := e.token("alice", api.RoleAuditor)
	operator := e.token("bob", api.RoleOperator)
	if _, err := auditor.Objects(ctx(t), ""); err != nil {
		t.Fatalf("auditor reads: %v", err)
	}
	_, err = auditor.Apply(ctx(t), api.ManagerApplyRequest{Documents: docs(t, examplePolicies...)})
	wantStatus(t, err, http.StatusForbidden, "needs a token with role admin")
	_, err = operator.CreateToken(ctx(t), "mallory", api.RoleAdmin)
	wantStatus(t, err, http.StatusForbidden, "token:bob (operator) may not")
	if _, err := auditor.VerifyAudit(ctx(t)); err != nil {
		t.Fatalf("auditor verifies the audit log: %v", err)
	}
	_, err = operator.Audit(ctx(t), 1, 10)
	wantStatus(t, err, http.StatusForbidden, "")
	if err := operator.Do(ctx(t), "DELETE", "/v1/workloads/h/ns/w", nil, nil); err != nil {
		t.Fatalf("operator workload action: %v", err)
	}

	// Tokens are stored hashed and can be revoked.
	toks, err := e.admin.Tokens(ctx(t))
	if err != nil || len(toks) != 3 {
		t.Fatalf("tokens: %v %v", toks, err)
	}
	for _, tok := range toks {
		if tok.Secret != "" {
			t.Fatalf("token list shows a secret: %+v", tok)
		}
	}
	if err := e.admin.RevokeToken(ctx(t), "alice"); err != nil {
		t.Fatal(err)
	}
	_, err = auditor.Objects(ctx(t), "")
	wantStatus(t, err, http.StatusUnauthorized, "")
	_, err = e.admin.CreateToken(ctx(t), "bob", api.RoleAdmin)
	wantStatus(t, err, http.StatusConflict, "exists")
	_, err = e.admin.CreateToken(ctx(t), "carol", "root")
	wantStatus(t, err, http.StatusBadRequest, "valid: admin, operator, auditor")
}

func TestBadRequests(t *testing.T) {
	e := start(t, func(c *manager.Config) { c.MaxBodyBytes = 64 << 10 })
	err := e.admin.Do(ctx(t), "POST", "/v1/apply", map[string]any{"documents": []any{}, "force": true}, nil)
	wantStatus(t, err, http.StatusBadRequest, `unknown field "force"`)
	err = e.admin.Do(ctx(t), "POST", "/v1/apply", map[string]any{"documents": "x"}, nil)
	wantStatus(t, err, http.StatusBadRequest, `field "documents"`)
	big := strings.Repeat("# padding\n", 10<<10)
	_, err = e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("big.yaml", big)})
	wantStatus(t, err, http.StatusRequestEntityTooLarge, "limit of 65536 bytes")
	_, err = e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("p.yaml", "apiVersion: bulkhead.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  tier: nope\n")})
	wantStatus(t, err, http.StatusUnprocessableEntity, "p.yaml:")
	if !strings.Contains(err.Error(), "spec.tier") {
		t.Fatalf("error does not name the field: %v", err)
	}
	_, err = e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("w.yaml", "apiVersion: bulkhead.dev/v1\nkind: Workload\nmetadata: {name: w}\nspec: {ips: [10.0.0.1]}\n")})
	wantStatus(t, err, http.StatusUnprocessableEntity, "reported by the agents")
	_, err = e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: docs(t, examplePolicies...), Wait: "forever"})
	wantStatus(t, err, http.StatusBadRequest, "wait:")
	revs, err := e.admin.Revisions(ctx(t), 0)
	if err != nil || len(revs.Items) != 0 {
		t.Fatalf("bad requests left revisions: %+v %v", revs, err)
	}
}

func TestApplyIsOneRevision(t *testing.T) {
	e := start(t)
	res, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: docs(t, examplePolicies...), Message: "first"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Revision == 0 || len(res.Created) < 10 {
		t.Fatalf("apply: %+v", res)
	}
	revs, err := e.admin.Revisions(ctx(t), 0)
	if err != nil || len(revs.Items) != 1 || revs.Items[0].Revision != res.Revision || revs.Head != res.Revision {
		t.Fatalf("revisions after one apply: %+v %v", revs, err)
	}
	if revs.Items[0].Actor != "token:admin (admin)" || revs.Items[0].Message != "first" || revs.Items[0].Objects != len(res.Created) {
		t.Fatalf("revision record: %+v", revs.Items[0])
	}
	walls, err := e.admin.Objects(ctx(t), "walls")
	if err != nil || len(walls.Items) != 1 || walls.Revision != res.Revision {
		t.Fatalf("walls: %+v %v", walls, err)
	}
	var segs api.ObjectList
	if err := e.admin.Do(ctx(t), "GET", "/v1/segments", nil, &segs); err != nil || len(segs.Items) < 4 {
		t.Fatalf("segments: %+v %v", segs, err)
	}

	// The same documents again change nothing: no revision.
	again, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: docs(t, examplePolicies...)})
	if err != nil || again.Revision != 0 || len(again.Unchanged) != len(res.Created) {
		t.Fatalf("second apply: %+v %v", again, err)
	}

	// A breach of the wall is refused whole, with the counterexample,
	// proven over the workloads the agents reported.
	agent, _ := e.join("node-1")
	if _, err := agent.ReportWorkloads(ctx(t), "node-1", tradingFloor(), nil, true); err != nil {
		t.Fatal(err)
	}
	_, err = e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: append(docs(t, "examples/breach.yaml"),
		doc("extra.yaml", "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: extra}\nspec: {cidrs: [{cidr: 192.0.2.0/24}]}\n")...)})
	wantStatus(t, err, http.StatusUnprocessableEntity, "breaches 1 walls")
	if !strings.Contains(err.Error(), "buy-sell") {
		t.Fatalf("the refusal does not name the wall: %v", err)
	}
	segs2, _ := e.admin.Objects(ctx(t), "Segment")
	if len(segs2.Items) != len(segs.Items) {
		t.Fatal("a refused apply changed the segments")
	}

	// A dry run validates without a revision.
	dry, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{DryRun: true,
		Documents: doc("extra.yaml", "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: extra}\nspec: {cidrs: [{cidr: 192.0.2.0/24}]}\n")})
	if err != nil || dry.Revision != 0 || len(dry.Created) != 1 {
		t.Fatalf("dry run: %+v %v", dry, err)
	}

	// A reference to a missing segment names the file and field.
	_, err = e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("wall.yaml",
		"apiVersion: bulkhead.dev/v1\nkind: Wall\nmetadata: {name: w2}\nspec: {segments: [buy-side, nowhere]}\n")})
	wantStatus(t, err, http.StatusUnprocessableEntity, `wall.yaml:1:1: spec.segments[1]: segment "nowhere" does not exist`)

	// Delete is a revision too; deleting what is absent is refused.
	del, err := e.admin.Delete(ctx(t), api.ManagerApplyRequest{Documents: docs(t, "examples/policies/30-payments.yaml")})
	if err != nil || del.Revision <= res.Revision || len(del.Deleted) == 0 {
		t.Fatalf("delete: %+v %v", del, err)
	}
	_, err = e.admin.Delete(ctx(t), api.ManagerApplyRequest{Documents: docs(t, "examples/policies/30-payments.yaml")})
	wantStatus(t, err, http.StatusNotFound, "does not exist")
}

func TestRevisionsDiffRollback(t *testing.T) {
	e := start(t)
	seg := func(name, cidr string) string {
		return "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: " + name + "}\nspec: {cidrs: [{cidr: " + cidr + "}]}\n---\n"
	}
	r1, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("a.yaml", seg("a", "10.1.0.0/16")+seg("b", "10.2.0.0/16"))})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("b.yaml", seg("a", "10.9.0.0/16")+seg("c", "10.3.0.0/16"))})
	if err != nil {
		t.Fatal(err)
	}
	if len(r2.Created) != 1 || len(r2.Updated) != 1 || len(r2.Unchanged) != 0 || len(r2.Deleted) != 0 {
		t.Fatalf("second apply: %+v", r2)
	}
	d, err := e.admin.Diff(ctx(t), r1.Revision, r2.Revision)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Changes) != 2 || d.Changes[0].Name != "a" || d.Changes[0].Before == nil || d.Changes[0].After == nil ||
		d.Changes[1].Name != "c" || d.Changes[1].Before != nil {
		t.Fatalf("diff: %+v", d)
	}
	rb, err := e.admin.Rollback(ctx(t), r1.Revision, api.RollbackRequest{Message: "undo"})
	if err != nil {
		t.Fatal(err)
	}
	if rb.Revision <= r2.Revision || len(rb.Deleted) != 1 || len(rb.Updated) != 1 {
		t.Fatalf("rollback: %+v", rb)
	}
	back, err := e.admin.Diff(ctx(t), r1.Revision, rb.Revision)
	if err != nil || len(back.Changes) != 0 {
		t.Fatalf("after a rollback the objects differ from the revision rolled back to: %+v %v", back, err)
	}
	revs, _ := e.admin.Revisions(ctx(t), 0)
	if len(revs.Items) != 3 || revs.Items[0].RollbackOf != r1.Revision || revs.Items[0].Parent != r2.Revision {
		t.Fatalf("revisions: %+v", revs)
	}
	var at api.ObjectList
	if err := e.admin.Do(ctx(t), "GET", "/v1/revisions/"+itoa(r2.Revision), nil, &at); err != nil || len(at.Items) != 3 {
		t.Fatalf("objects at revision %d: %+v %v", r2.Revision, at, err)
	}
	err = e.admin.Do(ctx(t), "GET", "/v1/revisions/999999", nil, nil)
	wantStatus(t, err, http.StatusNotFound, "not a policy revision")
}

// tradingFloor is part of examples/inventory.yaml as an agent reports it.
func tradingFloor() []api.HostWorkload {
	pg := []api.NamedPort{{Name: "postgres", Port: 5432, Protocol: "tcp"}}
	return []api.HostWorkload{
		{Namespace: "trading", Name: "buy-signal", Labels: map[string]string{"role": "buy-signal", "side": "buy"}, IPs: []string{"10.10.1.10"}},
		{Namespace: "trading", Name: "sell-signal", Labels: map[string]string{"role": "sell-signal", "side": "sell"}, IPs: []string{"10.10.1.20"}},
		{Namespace: "trading", Name: "buy-db", Labels: map[string]string{"role": "database", "side": "buy"}, IPs: []string{"10.10.2.10"}, Ports: pg},
		{Namespace: "trading", Name: "sell-db", Labels: map[string]string{"role": "database", "side": "sell"}, IPs: []string{"10.10.2.20"}, Ports: pg},
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
