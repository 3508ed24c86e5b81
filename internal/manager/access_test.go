package manager_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/pki"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

var testKeys sync.Map // *testing.T → the manager key of its first manager

// shareKey gives a manager started in dir the manager key of the first
// manager its test started, as an operator gives every manager that shares
// a store the same key file.
func shareKey(t *testing.T, dir string) {
	t.Helper()
	path := filepath.Join(dir, manager.KeyFile)
	first, loaded := testKeys.LoadOrStore(t, path)
	if !loaded {
		t.Cleanup(func() { testKeys.Delete(t) })
		return
	}
	if _, err := os.Stat(path); err == nil || first.(string) == path {
		return
	}
	data, err := os.ReadFile(first.(string))
	if err != nil {
		return // the first manager made none: this one makes its own
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// put writes key=value into the store behind the manager's back.
func put(t *testing.T, st store.Store, key string, value []byte) {
	t.Helper()
	if _, _, err := st.Txn(ctx(t), nil, []store.Op{store.Put(key, value)}); err != nil {
		t.Fatal(err)
	}
}

// A token written into the store by hand is refused, and raises an alert;
// so is a join token, and a certificate record edited to undo a revocation.
func TestHandWrittenAccessRecordsAreRefused(t *testing.T) {
	e := start(t)
	agent, creds := e.join("node-1")
	if _, err := e.admin.RevokeCertificate(ctx(t), creds.Serial); err != nil {
		t.Fatal(err)
	}

	const secret = "bh_handwritten"
	sum := sha256.Sum256([]byte(secret))
	hash := hex.EncodeToString(sum[:])
	put(t, e.st, "auth/tokens/"+hash, []byte(`{"name":"mallory","role":"admin","created":"2026-01-01T00:00:00Z","createdBy":"token:admin (admin)"}`))
	put(t, e.st, "auth/tokennames/mallory", []byte(hash))
	kv, err := e.st.Get(ctx(t), "auth/certs/"+creds.Serial)
	if err != nil {
		t.Fatal(err)
	}
	var cert map[string]any
	_ = json.Unmarshal(kv.Value, &cert)
	delete(cert, "revoked")
	delete(cert, "revokedBy")
	unrevoked, _ := json.Marshal(cert)
	put(t, e.st, kv.Key, unrevoked)
	const joinSecret = "bhj_handwritten"
	sum = sha256.Sum256([]byte(joinSecret))
	put(t, e.st, "auth/join/"+hex.EncodeToString(sum[:]), []byte(`{"host":"node-9","expires":"2099-01-01T00:00:00Z","created":"2026-01-01T00:00:00Z","createdBy":"token:admin (admin)"}`))
	// A change through the manager, after the hand-written ones: once it
	// is in the manager's copy, so are they.
	e.token("carol", api.RoleAuditor)

	_, err = e.client(secret).Objects(ctx(t), "")
	wantStatus(t, err, http.StatusUnauthorized, "unknown or revoked")
	_, err = agent.Hosts(ctx(t))
	wantStatus(t, err, http.StatusForbidden, "not in this manager's records")
	_, err = client.Join(ctx(t), e.m.URL(), e.m.CAPEM(), "", joinSecret, "node-9")
	wantStatus(t, err, http.StatusUnauthorized, "unknown join token")

	kinds := map[string]bool{}
	for _, a := range alerts(t, e) {
		if a.Kind == "record-seal" {
			kinds[strings.Split(a.Object, "/")[1]] = true
		}
	}
	if !kinds["tokens"] || !kinds["certs"] || !kinds["join"] {
		t.Fatalf("alerts for the hand-written records: %v", kinds)
	}
	waitFor(t, func() bool { return has(auditActions(t, e), "alert.record-seal") })
}

// The manager key stays outside the store: a manager without it, or with
// another, refuses to start on a sealed store, saying what to do; a store
// from before the key is sealed only when the operator says its records
// are trusted, and that is audited.
func TestManagerKey(t *testing.T) {
	e := start(t)
	if _, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("wall.yaml", denyPolicy)}); err != nil {
		t.Fatal(err)
	}
	e.m.Close()
	st, dir := e.st, e.dir
	startWith := func(opts ...func(*manager.Config)) (*manager.Manager, error) {
		cfg := manager.Config{Store: st, DataDir: dir, Listen: "127.0.0.1:0", Logger: quiet()}
		for _, o := range opts {
			o(&cfg)
		}
		m, err := manager.Start(ctx(t), cfg)
		if err == nil {
			t.Cleanup(func() { m.Close() })
		}
		return m, err
	}
	other := filepath.Join(t.TempDir(), manager.KeyFile)
	if err := os.WriteFile(other, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := startWith(func(c *manager.Config) { c.KeyFile = other }); err == nil || !strings.Contains(err.Error(), "is not the key this store was sealed with") {
		t.Fatalf("another key: %v", err)
	}
	keyPath := filepath.Join(dir, manager.KeyFile)
	key, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(keyPath); st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", st.Mode())
	}
	os.Remove(keyPath)
	if _, err := startWith(); err == nil || !strings.Contains(err.Error(), "copy manager.key from the data directory of a manager") {
		t.Fatalf("no key: %v", err)
	}

	// A store from before the manager key: its record and file are gone.
	if _, _, err := st.Txn(ctx(t), nil, []store.Op{store.Delete("pki/managerkey")}); err != nil {
		t.Fatal(err)
	}
	if _, err := startWith(); err == nil || !strings.Contains(err.Error(), "--adopt-unsealed-records") {
		t.Fatalf("unsealed records: %v", err)
	}
	m, err := startWith(func(c *manager.Config) { c.AdoptRecords = true })
	if err != nil {
		t.Fatal(err)
	}
	if err := m.WaitReady(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if newKey, _ := os.ReadFile(keyPath); len(newKey) == 0 || string(newKey) == string(key) {
		t.Fatal("no new key written")
	}
	e2 := &env{t: t, m: m, st: st, dir: dir}
	e2.admin = e2.client(e.m.AdminToken())
	if _, err := e2.admin.Tokens(ctx(t)); err != nil {
		t.Fatalf("the adopted admin token: %v", err)
	}
	if objs, err := e2.admin.Objects(ctx(t), ""); err != nil || len(objs.Items) != 1 {
		t.Fatalf("the adopted revision: %+v %v", objs, err)
	}
	if !has(auditActions(t, e2), "records.adopt") {
		t.Fatal("the adoption is not audited")
	}
}

// Join tokens can be listed (never their secrets) and revoked, and live
// an hour unless asked otherwise, at most a day.
func TestJoinTokensListAndRevoke(t *testing.T) {
	e := start(t)
	jt, err := e.admin.CreateJoinToken(ctx(t), "node-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(jt.Expires); d > time.Hour || d < 59*time.Minute || jt.ID == "" {
		t.Fatalf("join token: %+v", jt)
	}
	_, err = e.admin.CreateJoinToken(ctx(t), "node-1", 720*time.Hour)
	wantStatus(t, err, http.StatusBadRequest, "between 1s and 24h0m0s")
	used, err := e.admin.CreateJoinToken(ctx(t), "node-2", 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Join(ctx(t), e.m.URL(), nil, used.CAHash, used.Secret, "node-2"); err != nil {
		t.Fatal(err)
	}
	list, err := e.admin.JoinTokens(ctx(t))
	if err != nil || len(list) != 2 {
		t.Fatalf("join tokens: %+v %v", list, err)
	}
	if list[0].ID != jt.ID || list[0].Host != "node-1" || list[0].State != "unused" || list[1].State != "used" || list[1].Used == nil {
		t.Fatalf("join tokens: %+v", list)
	}
	raw, _ := json.Marshal(list)
	if strings.Contains(string(raw), jt.Secret) || strings.Contains(string(raw), "bhj_") {
		t.Fatalf("the list shows a secret: %s", raw)
	}
	_, err = e.client(jt.Secret).JoinTokens(ctx(t))
	wantStatus(t, err, http.StatusUnauthorized, "")

	if err := e.admin.RevokeJoinToken(ctx(t), jt.ID); err != nil {
		t.Fatal(err)
	}
	_, err = client.Join(ctx(t), e.m.URL(), nil, jt.CAHash, jt.Secret, "node-1")
	wantStatus(t, err, http.StatusUnauthorized, "unknown join token")
	wantStatus(t, e.admin.RevokeJoinToken(ctx(t), jt.ID), http.StatusNotFound, "GET /v1/jointokens lists them")
	if !has(auditActions(t, e), "jointoken.revoke") {
		t.Fatal("the revocation is not audited")
	}
}

func certBySerial(t *testing.T, e *env) map[string]api.Certificate {
	t.Helper()
	certs, err := e.admin.Certificates(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]api.Certificate{}
	for _, c := range certs {
		out[c.Serial] = c
	}
	return out
}

// Revoking a certificate revokes the ones renewed from it; revoking a host
// revokes all its certificates and unused join tokens; the certificate
// list shows the chains.
func TestRevocationReachesRenewedCertificates(t *testing.T) {
	e := start(t)
	a, credsA := e.join("node-1")
	credsB, err := a.Renew(ctx(t), "node-1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := credsB.Client(e.m.URL())
	credsC, err := b.Renew(ctx(t), "node-1")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := credsC.Client(e.m.URL())
	certs := certBySerial(t, e)
	if certs[credsA.Serial].RenewedFrom != "" || certs[credsB.Serial].RenewedFrom != credsA.Serial || certs[credsC.Serial].RenewedFrom != credsB.Serial {
		t.Fatalf("renewal chain: %+v", certs)
	}
	if _, err := e.admin.RevokeCertificate(ctx(t), credsA.Serial); err != nil {
		t.Fatal(err)
	}
	for _, renewed := range []*client.Client{b, c} {
		_, err := renewed.Identities(ctx(t))
		wantStatus(t, err, http.StatusForbidden, "revoked")
	}
	if c := certBySerial(t, e)[credsC.Serial]; c.Revoked == nil || c.RevokedBy != "token:admin (admin)" {
		t.Fatalf("the grandchild: %+v", c)
	}

	// Revoke by host: every certificate, and the join token not yet used.
	d, credsD := e.join("node-1")
	spare, err := e.admin.CreateJoinToken(ctx(t), "node-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := e.join("node-2")
	var res api.HostRevocation
	if err := e.admin.Do(ctx(t), "POST", "/v1/hosts/node-1/revoke", nil, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Certificates) != 1 || res.Certificates[0].Serial != credsD.Serial || len(res.JoinTokens) != 1 || res.JoinTokens[0] != spare.ID {
		t.Fatalf("host revocation: %+v", res)
	}
	_, err = d.Identities(ctx(t))
	wantStatus(t, err, http.StatusForbidden, "revoked")
	_, err = client.Join(ctx(t), e.m.URL(), nil, spare.CAHash, spare.Secret, "node-1")
	wantStatus(t, err, http.StatusUnauthorized, "unknown join token")
	if _, err := other.Identities(ctx(t)); err != nil {
		t.Fatalf("another host's certificate: %v", err)
	}
	err = e.admin.Do(ctx(t), "POST", "/v1/hosts/node-9/revoke", nil, nil)
	wantStatus(t, err, http.StatusNotFound, "no certificates")
	if !has(auditActions(t, e), "host.revoke") {
		t.Fatal("the host revocation is not audited")
	}
}

// Renewal is bounded per host: a burst, then 429 with Retry-After, also
// for renewals at the same moment; the bound lifts with time.
func TestRenewalIsRateLimited(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	e := start(t, func(c *manager.Config) { c.Now = func() time.Time { return time.Unix(0, clock.Load()) } })
	a, creds := e.join("node-1")
	var wg sync.WaitGroup
	var ok, limited, conflict atomic.Int32
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := a.Renew(ctx(t), "node-1")
			switch status(err) {
			case 0:
				ok.Add(1)
			case http.StatusTooManyRequests:
				limited.Add(1)
			case http.StatusConflict:
				conflict.Add(1)
			default:
				t.Errorf("renew: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() < 1 || ok.Load() > 3 || ok.Load()+limited.Load()+conflict.Load() != 40 {
		t.Fatalf("40 renewals at once: %d issued, %d limited, %d conflicts", ok.Load(), limited.Load(), conflict.Load())
	}
	for ok.Load() < 3 {
		if _, err := a.Renew(ctx(t), "node-1"); err != nil {
			t.Fatal(err)
		}
		ok.Add(1)
	}
	resp := rawRenew(t, e, creds)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("renewal past the bound: %s, Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
	}
	clock.Add(int64(11 * time.Minute))
	if _, err := a.Renew(ctx(t), "node-1"); err != nil {
		t.Fatalf("renewal after the window: %v", err)
	}
}

// rawRenew posts a renewal with creds over plain net/http, to see headers.
func rawRenew(t *testing.T, e *env, creds *client.Credentials) *http.Response {
	t.Helper()
	cert, err := tls.X509KeyPair(creds.Cert, creds.Key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.m.CAPEM())
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	_, csr, _ := pki.NewCSR("node-1")
	body, _ := json.Marshal(api.JoinRequest{CSR: string(csr)})
	req, _ := http.NewRequestWithContext(ctx(t), "POST", e.m.URL()+"/v1/renew", bytes.NewReader(body))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// A sealed record put back as it was before its revocation or its use is
// held to what the manager saw: the certificate stays revoked, the join
// token used, also across a restart, and an alert is raised.
func TestRolledBackRecordsAreHeld(t *testing.T) {
	e := start(t)
	agent, creds := e.join("node-1")
	before, err := e.st.Get(ctx(t), "auth/certs/"+creds.Serial)
	if err != nil {
		t.Fatal(err)
	}
	jt, err := e.admin.CreateJoinToken(ctx(t), "node-2", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(jt.Secret))
	joinKey := "auth/join/" + hex.EncodeToString(sum[:])
	unused, err := e.st.Get(ctx(t), joinKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Join(ctx(t), e.m.URL(), nil, jt.CAHash, jt.Secret, "node-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.RevokeCertificate(ctx(t), creds.Serial); err != nil {
		t.Fatal(err)
	}
	check := func(e *env) {
		t.Helper()
		_, err := agent.Identities(ctx(t))
		wantStatus(t, err, http.StatusForbidden, "revoked")
		_, err = client.Join(ctx(t), e.m.URL(), nil, jt.CAHash, jt.Secret, "node-2")
		wantStatus(t, err, http.StatusForbidden, "already used")
		found := false
		for _, a := range alerts(t, e) {
			found = found || a.Kind == "record-rollback"
		}
		if !found {
			t.Fatalf("no rollback alert: %+v", alerts(t, e))
		}
	}
	put(t, e.st, before.Key, before.Value)
	put(t, e.st, joinKey, unused.Value)
	e.token("carol", api.RoleAuditor) // the rollbacks are in the manager's copy
	check(e)
	e = e.restart()
	agent, _ = client.New(client.Config{URL: e.m.URL(), CA: e.m.CAPEM(), Certificate: mustPair(t, creds)})
	check(e)
}

func mustPair(t *testing.T, creds *client.Credentials) *tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(creds.Cert, creds.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// slowAuthStore is a store whose listings of the access records, after
// the first (the manager's own at New), wait until release is closed, as
// a slow store does while a manager starts following it.
type slowAuthStore struct {
	store.Store
	release chan struct{}
	lists   *atomic.Int32
}

func (s slowAuthStore) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	if prefix == "auth/" && s.lists.Add(1) > 1 {
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	return s.Store.List(ctx, prefix)
}

// A request that comes before the manager has read the access records
// waits for them, rather than be refused as unknown.
func TestRequestsWaitForTheAccessRecords(t *testing.T) {
	dir := t.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	release := make(chan struct{})
	m, err := manager.Start(ctx(t), manager.Config{Store: slowAuthStore{st, release, new(atomic.Int32)}, DataDir: dir, Listen: "127.0.0.1:0", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	e := &env{t: t, m: m, st: st, dir: dir}
	done := make(chan error, 1)
	go func() { _, err := e.client(m.AdminToken()).Tokens(ctx(t)); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("answered before the access records were read: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("the first admin request: %v", err)
	}
}
