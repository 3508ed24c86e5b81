package feed

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/manager"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

const examples = "../../../examples/policies"

// world is an in-process manager and managed agents with the userspace
// dataplane: the whole control path without root.
type world struct {
	t      *testing.T
	dir    string
	st     *boltstore.Store
	m      *manager.Manager
	addr   string // the manager's address, kept across restarts
	admin  *client.Client
	hosts  map[string]*host
	logger *slog.Logger
}

type host struct {
	name   string
	dir    string
	hostIP netip.Addr
	a      *agent.Agent
	f      *Follower
	// beforeSync, when set before start, runs before each agent.Sync.
	beforeSync func()
}

func newWorld(t *testing.T, keepRevs int) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir(), hosts: map[string]*host{}, logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if testing.Verbose() {
		w.logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	st, err := boltstore.Open(filepath.Join(w.dir, "bulkhead.db"), boltstore.Options{KeepRevs: keepRevs})
	if err != nil {
		t.Fatal(err)
	}
	w.st = st
	t.Cleanup(func() { st.Close() })
	w.startManager("127.0.0.1:0")
	return w
}

func (w *world) startManager(listen string) {
	w.t.Helper()
	m, err := manager.Start(context.Background(), manager.Config{Store: w.st, DataDir: w.dir, Listen: listen,
		Heartbeat: 500 * time.Millisecond, Logger: w.logger.With("component", "manager")})
	if err != nil {
		w.t.Fatal(err)
	}
	w.m, w.addr = m, m.Addr().String()
	w.t.Cleanup(func() { m.Close() })
	if w.admin, err = client.New(client.Config{URL: m.URL(), CA: m.CAPEM(), Token: m.AdminToken()}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) url() string { return "https://" + w.addr }

// join makes a join token for name, joins, and starts its agent and
// follower (after opts).
func (w *world) join(name, hostIP string, opts ...func(*host)) *host {
	w.t.Helper()
	ctx := context.Background()
	h := &host{name: name, dir: filepath.Join(w.dir, name), hostIP: netip.MustParseAddr(hostIP)}
	jt, err := w.admin.CreateJoinToken(ctx, name, time.Hour)
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := Join(ctx, filepath.Join(h.dir, "manager"), w.url(), nil, jt.CAHash, jt.Secret, name); err != nil {
		w.t.Fatal(err)
	}
	w.hosts[name] = h
	for _, o := range opts {
		o(h)
	}
	w.start(h)
	return h
}

func (w *world) start(h *host) {
	w.t.Helper()
	a, err := agent.Start(context.Background(), agent.Options{StateDir: filepath.Join(h.dir, "state"), Host: h.name,
		Dataplane: dataplane.NewUserspace(), Manager: w.url(), Logger: w.logger})
	if err != nil {
		w.t.Fatal(err)
	}
	f, err := Start(context.Background(), Options{Agent: a, URL: w.url(), Dir: filepath.Join(h.dir, "manager"), HostIP: h.hostIP,
		Backoff: func(int) time.Duration { return 50 * time.Millisecond }, Timeout: 2 * time.Second, Logger: w.logger.With("host", h.name),
		beforeSync: h.beforeSync})
	if err != nil {
		a.Close()
		w.t.Fatal(err)
	}
	h.a, h.f = a, f
	w.t.Cleanup(func() { h.stop() })
}

func (h *host) stop() {
	if h.f != nil {
		h.f.Close()
		h.a.Close()
		h.f, h.a = nil, nil
	}
}

func (w *world) apply(docs ...api.Document) int64 {
	w.t.Helper()
	res, err := w.admin.Apply(context.Background(), api.ManagerApplyRequest{Documents: docs, Wait: "10s"})
	if err != nil {
		w.t.Fatal(err)
	}
	if len(res.NotRealized) > 0 {
		w.t.Fatalf("revision %d not realized by %v after 10 s", res.Revision, res.NotRealized)
	}
	return res.Revision
}

func readDocs(t *testing.T, dir string) []api.Document {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	var out []api.Document
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, api.Document{Name: f, Data: string(data)})
	}
	return out
}

func register(t *testing.T, h *host, ns, name, ip string, labels map[string]string, ports ...api.NamedPort) {
	t.Helper()
	_, err := h.a.RegisterWorkload(context.Background(), api.WorkloadRegistration{Namespace: ns, Name: name, Labels: labels,
		IPs: []string{ip}, Ports: ports, Interface: attach.HostIfName(name)})
	if err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("after 10 s: %s", what)
		}
	}
}

// verdict is what host h's own tables decide for a TCP connection, with
// the lookups the kernel makes: a side whose workload is elsewhere is
// left to its host.
func verdict(t *testing.T, h *host, from, to string, port int) policy.Action {
	t.Helper()
	e, err := policy.NewEngine(h.a.PolicySet())
	if err != nil {
		t.Fatal(err)
	}
	fe, err := e.Endpoint(from)
	if err != nil {
		t.Fatalf("host %s: %v", h.name, err)
	}
	te, err := e.Endpoint(to)
	if err != nil {
		t.Fatalf("host %s: %v", h.name, err)
	}
	return dataplane.Enforced(compile.Lookup(h.a.State(), policy.Probe{From: fe, To: te, Protocol: policy.TCP, Port: port}))
}

func holds(h *host, ns, name string) bool {
	for _, it := range h.a.Objects("Workload").Items {
		if m, _ := it["metadata"].(map[string]any); m["namespace"] == ns && m["name"] == name {
			return true
		}
	}
	return false
}

var pg = api.NamedPort{Name: "postgres", Port: 5432, Protocol: "TCP"}

// Two hosts follow one manager: each enforces the manager's policy,
// holds the other's workloads as remote, and judges its own side of a
// connection between them.
func TestTwoHosts(t *testing.T) {
	w := newWorld(t, 0)
	w.apply(readDocs(t, examples)...)
	h1 := w.join("node-1", "192.0.2.1")
	h2 := w.join("node-2", "192.0.2.2")
	register(t, h1, "trading", "buy-signal", "10.1.0.1", map[string]string{"role": "buy-signal", "side": "buy"})
	register(t, h1, "trading", "buy-db", "10.1.0.2", map[string]string{"role": "database", "side": "buy"}, pg)
	register(t, h2, "trading", "sell-signal", "10.2.0.1", map[string]string{"role": "sell-signal", "side": "sell"})
	register(t, h2, "trading", "sell-db", "10.2.0.2", map[string]string{"role": "database", "side": "sell"}, pg)
	eventually(t, "each host holds the other's workloads", func() bool {
		return holds(h1, "trading", "sell-db") && holds(h1, "trading", "sell-signal") && holds(h2, "trading", "buy-db")
	})
	if n := len(h1.a.Objects("Policy").Items); n == 0 {
		t.Fatal("host 1 holds no policy from the manager")
	}
	if _, err := h1.a.Apply(context.Background(), api.ApplyRequest{Documents: readDocs(t, examples)}); err == nil {
		t.Error("a managed agent took a local apply")
	}
	// The wall is enforced on both hosts, each on its own side.
	if got := verdict(t, h1, "trading/buy-signal", "trading/sell-db", 5432); got != policy.Deny {
		t.Errorf("host 1: buy-signal -> sell-db = %v, want deny (wall)", got)
	}
	if got := verdict(t, h2, "trading/buy-signal", "trading/sell-db", 5432); got != policy.Deny {
		t.Errorf("host 2: buy-signal -> sell-db = %v, want deny (wall)", got)
	}
	// A cross-host connection the policy allows: each host allows its side.
	register(t, h2, "trading", "buy-signal-2", "10.2.0.3", map[string]string{"role": "buy-signal", "side": "buy"})
	eventually(t, "host 1 holds buy-signal-2", func() bool { return holds(h1, "trading", "buy-signal-2") })
	for _, h := range []*host{h1, h2} {
		if got := verdict(t, h, "trading/buy-signal-2", "trading/buy-db", 5432); got != policy.Allow {
			t.Errorf("host %s: buy-signal-2 (node-2) -> buy-db (node-1) = %v, want allow", h.name, got)
		}
	}
	// The manager knows each host's underlay address and realized revision.
	wl, err := w.admin.Workloads(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range wl.Items {
		if it.HostIP != w.hosts[it.Host].hostIP.String() {
			t.Errorf("workload %s/%s on %s: hostIP %q", it.Namespace, it.Name, it.Host, it.HostIP)
		}
	}
	rev := w.apply(api.Document{Name: "extra.yaml", Data: extraPolicy})
	for _, h := range []*host{h1, h2} {
		if st := h.f.Status(); st.Realized < rev || !st.Connected {
			t.Errorf("host %s: %+v, want connected and realized ≥ %d", h.name, st, rev)
		}
	}
	// A workload unregistered on node-2 leaves node-1's inventory.
	if err := h2.a.UnregisterWorkload(context.Background(), "trading", "buy-signal-2"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "host 1 drops buy-signal-2", func() bool { return !holds(h1, "trading", "buy-signal-2") })
}

const extraPolicy = `apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: extra, namespace: trading}
spec:
  appliesTo: {selector: {matchLabels: {role: buy-signal}}}
  egress:
    - {name: to-dns, action: allow, services: [{protocol: udp, port: 5353}]}
`

// Fail-static: with the manager gone the agents keep what they enforce;
// a revision made while one host was away reaches it when it is back,
// by resuming from where it was, or by a resync when the manager no
// longer keeps that revision.
func TestManagerGoneAndBack(t *testing.T) {
	w := newWorld(t, 5)
	w.apply(readDocs(t, examples)...)
	h1 := w.join("node-1", "192.0.2.1")
	h2 := w.join("node-2", "192.0.2.2")
	register(t, h1, "trading", "buy-db", "10.1.0.2", map[string]string{"role": "database", "side": "buy"}, pg)
	register(t, h2, "trading", "sell-signal", "10.2.0.1", map[string]string{"role": "sell-signal", "side": "sell"})
	eventually(t, "host 1 holds sell-signal", func() bool { return holds(h1, "trading", "sell-signal") })
	objects := len(h1.a.Objects().Items)

	w.m.Close()
	eventually(t, "the followers notice the manager is gone", func() bool {
		return !h1.f.Status().Connected && !h2.f.Status().Connected
	})
	eventually(t, "the followers fail to reconnect", func() bool {
		return strings.Contains(h1.f.Status().Error, "refused") && strings.Contains(h2.f.Status().Error, "refused")
	})
	if got := len(h1.a.Objects().Items); got != objects {
		t.Fatalf("without a manager host 1 holds %d objects, had %d", got, objects)
	}
	if got := verdict(t, h1, "trading/sell-signal", "trading/buy-db", 5432); got != policy.Deny {
		t.Errorf("without a manager, host 1: sell-signal -> buy-db = %v, want deny (wall)", got)
	}
	// node-2 goes away too, and stays away over more revisions than the
	// store keeps.
	h2.stop()
	w.startManager(w.addr)
	var rev int64
	for i := range 8 {
		doc := strings.ReplaceAll(extraPolicy, "5353", string(rune('0'+i))+"053")
		res, err := w.admin.Apply(context.Background(), api.ManagerApplyRequest{Documents: []api.Document{{Name: "extra.yaml", Data: doc}}})
		if err != nil {
			t.Fatal(err)
		}
		rev = res.Revision
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h1.f.WaitRealized(ctx, rev); err != nil {
		t.Fatal(err)
	}
	w.start(h2) // resumes from a revision the store no longer keeps: resync
	if err := h2.f.WaitRealized(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if !holds(h2, "trading", "buy-db") || len(h2.a.Objects("Policy").Items) != len(h1.a.Objects("Policy").Items) {
		t.Errorf("host 2 after the resync: %d policies (host 1: %d), buy-db held: %v",
			len(h2.a.Objects("Policy").Items), len(h1.a.Objects("Policy").Items), holds(h2, "trading", "buy-db"))
	}
}

// A restarted agent resumes the feed after the last revision it
// realized, with no snapshot, and gets what changed while it was away.
func TestResume(t *testing.T) {
	w := newWorld(t, 0)
	first := w.apply(readDocs(t, examples)...)
	h1 := w.join("node-1", "192.0.2.1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h1.f.WaitRealized(ctx, first); err != nil {
		t.Fatal(err)
	}
	h1.stop()
	res, err := w.admin.Apply(context.Background(), api.ManagerApplyRequest{Documents: []api.Document{{Name: "extra.yaml", Data: extraPolicy}}})
	if err != nil {
		t.Fatal(err)
	}
	rev := res.Revision
	rec := &recorder{}
	w.logger = slog.New(rec)
	w.start(h1)
	if got := h1.f.Status().Realized; got < first {
		t.Errorf("restarted: realized %d, want the %d it enforced before", got, first)
	}
	if err := h1.f.WaitRealized(ctx, rev); err != nil {
		t.Fatal(err)
	}
	for _, r := range rec.records() {
		if r.Message == "full resync" || (r.Message == "following the manager" && attr(r, "from") == "0") {
			t.Errorf("the restarted agent did not resume: %s %s", r.Message, attr(r, "reason"))
		}
	}
	if !hasPolicy(h1, "extra") {
		t.Error("the revision made while the agent was away is not held")
	}
}

func hasPolicy(h *host, name string) bool {
	for _, it := range h.a.Objects("Policy").Items {
		if m, _ := it["metadata"].(map[string]any); m["name"] == name {
			return true
		}
	}
	return false
}

// recorder is a slog handler that keeps the records.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }
func (r *recorder) records() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]slog.Record(nil), r.recs...)
}

func attr(r slog.Record, key string) string {
	v := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
		}
		return true
	})
	return v
}

// Join once: the credentials are kept, a second join reuses them, and a
// token is used once.
func TestJoin(t *testing.T) {
	w := newWorld(t, 0)
	ctx := context.Background()
	dir := filepath.Join(w.dir, "creds")
	jt, err := w.admin.CreateJoinToken(ctx, "node-9", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Join(ctx, dir, w.url(), nil, "", jt.Secret, "node-9"); err == nil {
		t.Error("joined without a way to trust the manager")
	}
	c, err := Join(ctx, dir, w.url(), nil, jt.CAHash, jt.Secret, "node-9")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, client.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, mode %v", err, fi.Mode())
	}
	again, err := Join(ctx, dir, w.url(), nil, "", "", "node-9")
	if err != nil || again.Serial != c.Serial {
		t.Errorf("second join: %v, serial %s want %s", err, again.Serial, c.Serial)
	}
	if _, err := Join(ctx, dir, w.url(), nil, "", "", "node-8"); err == nil {
		t.Error("credentials of node-9 were used for node-8")
	}
	if _, err := Join(ctx, filepath.Join(w.dir, "other"), w.url(), nil, jt.CAHash, jt.Secret, "node-9"); err == nil {
		t.Error("a join token worked twice")
	}
	// A report naming a bad underlay address is refused whole.
	cl, _ := c.Client(w.url())
	_, err = cl.ReportWorkloads(ctx, "node-9", []api.HostWorkload{{Namespace: "a", Name: "b", IPs: []string{"10.9.0.1"}, HostIP: "nowhere"}}, nil, true)
	if apiErrorStatus(err) != 422 || !strings.Contains(err.Error(), "hostIP") {
		t.Errorf("report with hostIP \"nowhere\": %v, want 422 naming hostIP", err)
	}
}
