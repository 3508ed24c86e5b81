package manager_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/pki"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

func TestJoin(t *testing.T) {
	clock := newTestClock()
	e := start(t, func(c *manager.Config) { c.Now = clock.Now })
	jt, err := e.admin.CreateJoinToken(ctx(t), "node-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// A wrong CA hash: the agent does not trust the server.
	if _, err := client.Join(ctx(t), e.m.URL(), nil, "sha256:00", jt.Secret, "node-1"); err == nil || !strings.Contains(err.Error(), "does not have hash") {
		t.Fatalf("join with a wrong CA hash: %v", err)
	}
	creds, err := client.Join(ctx(t), e.m.URL(), nil, jt.CAHash, jt.Secret, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	if creds.Host != "node-1" || creds.Serial == "" {
		t.Fatalf("credentials: %+v", creds)
	}
	// The token was good for one join.
	_, err = client.Join(ctx(t), e.m.URL(), e.m.CAPEM(), "", jt.Secret, "node-1")
	wantStatus(t, err, http.StatusForbidden, "already used")
	_, err = client.Join(ctx(t), e.m.URL(), e.m.CAPEM(), "", "bhj_nothing", "node-1")
	wantStatus(t, err, http.StatusUnauthorized, "unknown join token")
	// A CSR for another host than the token's is refused.
	jt2, _ := e.admin.CreateJoinToken(ctx(t), "node-2", time.Minute)
	_, err = client.Join(ctx(t), e.m.URL(), e.m.CAPEM(), "", jt2.Secret, "node-3")
	wantStatus(t, err, http.StatusBadRequest, "host:node-2")
	// An expired token is refused.
	jt3, _ := e.admin.CreateJoinToken(ctx(t), "node-4", time.Second)
	clock.Advance(1100 * time.Millisecond)
	_, err = client.Join(ctx(t), e.m.URL(), e.m.CAPEM(), "", jt3.Secret, "node-4")
	wantStatus(t, err, http.StatusForbidden, "expired")

	agent, err := creds.Client(e.m.URL())
	if err != nil {
		t.Fatal(err)
	}
	res, err := agent.ReportWorkloads(ctx(t), "node-1", tradingFloor(), nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Revision == 0 || len(res.Workloads) != 4 || res.Workloads[0].Identity == 0 {
		t.Fatalf("report: %+v", res)
	}
	// Another host's workloads are refused, naming why.
	_, err = agent.ReportWorkloads(ctx(t), "node-2", tradingFloor(), nil, true)
	wantStatus(t, err, http.StatusForbidden, "names host node-1; it may not act for host node-2")
	err = agent.ReportStatus(ctx(t), "node-2", api.HostStatus{Realized: 1})
	wantStatus(t, err, http.StatusForbidden, "may not act for host node-2")
	// An agent is not an admin.
	_, err = agent.Apply(ctx(t), api.ManagerApplyRequest{Documents: docs(t, examplePolicies...)})
	wantStatus(t, err, http.StatusForbidden, "host:node-1 may not")
	// A certificate from another CA is not accepted (the client does not
	// even offer it: the server asks for certificates of its own CA).
	other, _ := pki.NewCA("other", time.Now())
	key, csr, _ := pki.NewCSR("node-1")
	forged, _ := other.SignCSR(csr, "node-1", time.Now(), time.Hour)
	fc, _ := tls.X509KeyPair(pki.CertPEM(forged), key)
	fcl, _ := client.New(client.Config{URL: e.m.URL(), CA: e.m.CAPEM(), Certificate: &fc})
	if _, err := fcl.Hosts(ctx(t)); err == nil || (status(err) != 0 && status(err) != http.StatusUnauthorized) {
		t.Fatalf("a certificate of another CA was accepted: %v", err)
	}

	// Renewal gives a new certificate for the same host.
	renewed, err := agent.Renew(ctx(t), "node-1")
	if err != nil || renewed.Host != "node-1" || renewed.Serial == creds.Serial {
		t.Fatalf("renew: %+v %v", renewed, err)
	}

	// A revoked certificate is refused with the reason.
	if _, err := e.admin.RevokeCertificate(ctx(t), creds.Serial); err != nil {
		t.Fatal(err)
	}
	_, err = agent.ReportWorkloads(ctx(t), "node-1", tradingFloor(), nil, true)
	wantStatus(t, err, http.StatusForbidden, "revoked")
	certs, err := e.admin.Certificates(ctx(t))
	if err != nil || len(certs) != 2 {
		t.Fatalf("certificates: %+v %v", certs, err)
	}
}

func TestIdentitiesAreClusterWide(t *testing.T) {
	e := start(t)
	a1, _ := e.join("node-1")
	a2, _ := e.join("node-2")
	web := map[string]string{"app": "web"}
	r1, err := a1.ReportWorkloads(ctx(t), "node-1", []api.HostWorkload{
		{Namespace: "shop", Name: "web-1", Labels: web, IPs: []string{"10.0.1.1"}},
		{Namespace: "shop", Name: "db-1", Labels: map[string]string{"app": "db"}, IPs: []string{"10.0.1.2"}},
	}, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := a2.ReportWorkloads(ctx(t), "node-2", []api.HostWorkload{
		{Namespace: "shop", Name: "web-2", Labels: web, IPs: []string{"10.0.2.1"}},
	}, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if r1.Workloads[0].Identity != r2.Workloads[0].Identity || r1.Workloads[0].Identity == r1.Workloads[1].Identity {
		t.Fatalf("identities: node-1 %+v, node-2 %+v", r1.Workloads, r2.Workloads)
	}
	// An address another host holds is refused.
	_, err = a2.ReportWorkloads(ctx(t), "node-2", []api.HostWorkload{{Namespace: "shop", Name: "x", IPs: []string{"10.0.1.1"}}}, nil, false)
	wantStatus(t, err, http.StatusUnprocessableEntity, "workloads[0].ips[0]: 10.0.1.1: already belongs to shop/web-1 on host node-1")

	ids, err := a2.Identities(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	var webID *api.Identity
	for i := range ids.Items {
		if ids.Items[i].ID == r1.Workloads[0].Identity {
			webID = &ids.Items[i]
		}
	}
	if webID == nil || strings.Join(webID.Addresses, ",") != "10.0.1.1,10.0.2.1" {
		t.Fatalf("identities: %+v", ids)
	}

	// A namespace's new labels give its workloads a new identity.
	if _, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("ns.yaml",
		"apiVersion: bulkhead.dev/v1\nkind: Namespace\nmetadata: {name: shop, labels: {tier: front}}\n")}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		wl, err := e.admin.Workloads(ctx(t), "node-2")
		if err != nil {
			t.Fatal(err)
		}
		if len(wl.Items) == 1 && wl.Items[0].Identity != r2.Workloads[0].Identity {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("workloads kept their identity after their namespace's labels changed: %+v", wl)
		}
		time.Sleep(20 * time.Millisecond)
	}

	hosts, err := e.admin.Hosts(ctx(t))
	if err != nil || len(hosts.Items) != 2 || hosts.Items[0].Workloads != 2 {
		t.Fatalf("hosts: %+v %v", hosts, err)
	}
}

// feedReader collects a watch's events in the background.
type feedReader struct {
	events chan api.FeedEvent
	done   chan struct{}
	next   int64
	err    error
	cancel context.CancelFunc
}

func watch(t *testing.T, c *client.Client, from int64) *feedReader {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	fr := &feedReader{events: make(chan api.FeedEvent, 10000), done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(fr.done)
		fr.next, fr.err = c.Watch(ctx, from, func(ev api.FeedEvent) error {
			fr.events <- ev
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-fr.done })
	return fr
}

// until reads events until one satisfies stop, returning all read.
func (fr *feedReader) until(t *testing.T, stop func(api.FeedEvent) bool) []api.FeedEvent {
	t.Helper()
	var got []api.FeedEvent
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-fr.events:
			got = append(got, ev)
			if stop(ev) {
				return got
			}
		case <-timeout:
			t.Fatalf("no matching event; got %+v", got)
		}
	}
}

func revAtLeast(rev int64) func(api.FeedEvent) bool {
	return func(ev api.FeedEvent) bool { return ev.Type == api.FeedRev && ev.Rev >= rev }
}

func count(evs []api.FeedEvent, typ, op string) int {
	n := 0
	for _, ev := range evs {
		if ev.Type == typ && (op == "" || ev.Op == op) {
			n++
		}
	}
	return n
}

func TestWatchSnapshotEventsResumeResync(t *testing.T) {
	e := start(t)
	r1, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: docs(t, examplePolicies...)})
	if err != nil {
		t.Fatal(err)
	}
	agent, _ := e.join("node-1")
	rep, err := agent.ReportWorkloads(ctx(t), "node-1", tradingFloor(), nil, true)
	if err != nil {
		t.Fatal(err)
	}

	// from=0: a snapshot of everything, then a "rev" line.
	fr := watch(t, agent, 0)
	snap := fr.until(t, revAtLeast(rep.Revision))
	if snap[0].Type != api.FeedSnapshot || count(snap, api.FeedObject, "put") != len(r1.Created) ||
		count(snap, api.FeedWorkload, "put") != 4 || count(snap, api.FeedIdentity, "put") != 4 {
		t.Fatalf("snapshot: %d events, first %+v", len(snap), snap[0])
	}
	if last := snap[len(snap)-1]; last.Policy != r1.Revision {
		t.Fatalf("snapshot's rev line: %+v, want policy %d", last, r1.Revision)
	}

	// A change arrives as the objects that changed, then its rev line.
	r2, err := e.admin.Delete(ctx(t), api.ManagerApplyRequest{Documents: docs(t, "examples/policies/30-payments.yaml")})
	if err != nil {
		t.Fatal(err)
	}
	evs := fr.until(t, revAtLeast(r2.Revision))
	if count(evs, api.FeedObject, "delete") != len(r2.Deleted) || count(evs, api.FeedObject, "put") != 0 {
		t.Fatalf("events of a delete: %+v", evs)
	}
	// Heartbeats keep a quiet stream alive.
	fr.until(t, func(ev api.FeedEvent) bool { return ev.Type == api.FeedHeartbeat && ev.Rev == r2.Revision })
	fr.cancel()
	<-fr.done
	if fr.next != r2.Revision+1 {
		t.Fatalf("resume from %d, want %d", fr.next, r2.Revision+1)
	}

	// Resume: only what happened since.
	r3, err := agent.ReportWorkloads(ctx(t), "node-1", tradingFloor()[:3], nil, true)
	if err != nil {
		t.Fatal(err)
	}
	fr2 := watch(t, agent, fr.next)
	evs = fr2.until(t, revAtLeast(r3.Revision))
	if evs[0].Type != api.FeedWorkload || evs[0].Op != "delete" || evs[0].Workload.Name != "sell-db" {
		t.Fatalf("resumed events: %+v", evs)
	}

	// A compacted revision: a resync marker, then a whole snapshot. (The
	// manager that saw the revisions still sends them from memory; one
	// started after the compaction has only the store.)
	if err := e.st.Compact(ctx(t), r3.Revision); err != nil {
		t.Fatal(err)
	}
	e.m.Close()
	e2 := startOn(t, e.st, t.TempDir())
	if agent, err = client.New(client.Config{URL: e2.m.URL(), CA: e2.m.CAPEM(), Token: e.m.AdminToken()}); err != nil {
		t.Fatal(err)
	}
	fr3 := watch(t, agent, fr.next)
	evs = fr3.until(t, revAtLeast(r3.Revision))
	if evs[0].Type != api.FeedResync || !strings.Contains(evs[0].Reason, "no longer kept") ||
		count(evs, api.FeedObject, "put") != len(r1.Created)-len(r2.Deleted) || count(evs, api.FeedWorkload, "put") != 3 {
		t.Fatalf("resync: %d events, first %+v", len(evs), evs[0])
	}

	// A reader ahead of the store (the store was replaced) resyncs too.
	fr4 := watch(t, agent, r3.Revision+1000)
	evs = fr4.until(t, func(ev api.FeedEvent) bool { return ev.Type == api.FeedRev })
	if evs[0].Type != api.FeedResync || !strings.Contains(evs[0].Reason, "ahead of the store") {
		t.Fatalf("a reader from the future: first event %+v", evs[0])
	}
}

func TestWatchCutOffOnRevocation(t *testing.T) {
	e := start(t)
	agent, creds := e.join("node-1")
	fr := watch(t, agent, 0)
	fr.until(t, func(ev api.FeedEvent) bool { return ev.Type == api.FeedRev })
	if _, err := e.admin.RevokeCertificate(ctx(t), creds.Serial); err != nil {
		t.Fatal(err)
	}
	evs := fr.until(t, func(ev api.FeedEvent) bool { return ev.Type == api.FeedCutoff })
	if last := evs[len(evs)-1]; !strings.Contains(last.Reason, "revoked") {
		t.Fatalf("cutoff: %+v", last)
	}
	_, err := agent.Watch(ctx(t), 0, func(api.FeedEvent) error { return nil })
	wantStatus(t, err, http.StatusForbidden, "revoked")
}

func TestApplyWaitsForHosts(t *testing.T) {
	e := start(t)
	a1, _ := e.join("node-1")
	e.join("node-2")
	// node-1 realizes whatever it sees on its feed; node-2 never reports.
	fr := watch(t, a1, 0)
	go func() {
		for ev := range fr.events {
			if ev.Type == api.FeedRev {
				_ = a1.ReportStatus(context.Background(), "node-1", api.HostStatus{Realized: ev.Rev, Health: "ok"})
			}
		}
	}()
	start := time.Now()
	res, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: docs(t, examplePolicies...), Wait: "700ms"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Realized, ",") != "node-1" || strings.Join(res.NotRealized, ",") != "node-2" {
		t.Fatalf("wait: realized %v, not realized %v", res.Realized, res.NotRealized)
	}
	if d := time.Since(start); d < 700*time.Millisecond || d > 5*time.Second {
		t.Fatalf("apply with wait=700ms took %s", d)
	}
	hosts, _ := e.admin.Hosts(ctx(t))
	if hosts.Items[0].Realized < res.Revision || hosts.Items[0].Health != "ok" {
		t.Fatalf("hosts: %+v", hosts)
	}
}

func TestAuditChain(t *testing.T) {
	e := start(t)
	if _, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: docs(t, examplePolicies...)}); err != nil {
		t.Fatal(err)
	}
	e.token("alice", api.RoleAuditor)
	v, err := e.admin.VerifyAudit(ctx(t))
	if err != nil || !v.OK || v.Entries != 3 {
		t.Fatalf("verify: %+v %v", v, err)
	}
	list, err := e.admin.Audit(ctx(t), 1, 100)
	if err != nil || len(list.Items) != 3 {
		t.Fatalf("audit: %+v %v", list, err)
	}
	if a := list.Items[1]; a.Action != "policy.apply" || a.Actor != (api.AuditActor{Kind: "token", Name: "admin", Role: "admin"}) || a.Revision == 0 {
		t.Fatalf("apply entry: %+v", a)
	}
	revs, _ := e.admin.Revisions(ctx(t), 0)
	if list.Items[1].Revision != revs.Items[0].Revision {
		t.Fatalf("the audit entry's revision %d is not the apply's %d", list.Items[1].Revision, revs.Items[0].Revision)
	}

	// Change an entry behind the manager's back.
	kv, err := e.st.Get(ctx(t), "audit/log/00000000000000000002")
	if err != nil {
		t.Fatal(err)
	}
	var entry map[string]any
	_ = json.Unmarshal(kv.Value, &entry)
	entry["object"] = "something else"
	forged, _ := json.Marshal(entry)
	if _, _, err := e.st.Txn(ctx(t), nil, []store.Op{store.Put(kv.Key, forged)}); err != nil {
		t.Fatal(err)
	}
	v, err = e.admin.VerifyAudit(ctx(t))
	if err != nil || v.OK || v.Seq != 2 || !strings.Contains(v.Problem, "does not match its hash") {
		t.Fatalf("verify after tampering: %+v %v", v, err)
	}
}

// testClock is a manager's clock that moves only when the test says:
// it starts at the real time, so that the certificates it dates are
// valid for the real clients.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock { return &testClock{now: time.Now()} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
