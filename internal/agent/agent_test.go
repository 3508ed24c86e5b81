package agent

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

var ctx = context.Background()

func TestApplyReportsCreatedUpdatedUnchanged(t *testing.T) {
	a := startAgent(t, shortDir(t))
	res, err := a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Created) != 15 || res.Revision != 1 || res.EnforcedMicros <= 0 {
		t.Fatalf("first apply: %+v", res)
	}
	applies, _ := a.dp.snapshot()
	res, err = a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples)})
	if err != nil || len(res.Unchanged) != 15 || len(res.Created)+len(res.Updated) != 0 || res.Revision != 1 {
		t.Fatalf("second apply: %+v, %v", res, err)
	}
	if n, _ := a.dp.snapshot(); n != applies {
		t.Fatalf("an unchanged apply reached the dataplane")
	}
	changed := strings.Replace(docs(t, examples+"/20-trading.yaml")[0].Data, "priority: 100", "priority: 90", 1)
	res, err = a.c.Apply(ctx, api.ApplyRequest{Documents: []api.Document{doc("trading.yaml", changed)}})
	if err != nil || len(res.Updated) != 1 || res.Updated[0] != (api.ObjectRef{Kind: "Policy", Namespace: "trading", Name: "buy-db"}) ||
		len(res.Unchanged) != 2 || res.Revision != 2 {
		t.Fatalf("update: %+v, %v", res, err)
	}
	l, err := a.c.Objects(ctx, "policies")
	if err != nil || len(l.Items) != 7 || l.Revision != 2 {
		t.Fatalf("objects: %d, %v", len(l.Items), err)
	}
	meta := l.Items[1]["metadata"].(map[string]any)
	if l.Items[0]["kind"] != "NetworkPolicy" || l.Items[1]["kind"] != "Policy" || meta["name"] != "default-deny" {
		t.Fatalf("items: %v", l.Items[:2])
	}
	if _, err := a.c.Objects(ctx, "gadgets"); err == nil || !strings.Contains(err.Error(), `unknown kind "gadgets"`) {
		t.Fatalf("unknown kind: %v", err)
	}
}

func TestApplyEnforcesBeforeAnswering(t *testing.T) {
	a := startAgent(t, shortDir(t))
	for _, w := range inventory {
		if _, err := a.c.RegisterWorkload(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.dp.enforced(t, "trading/sell-signal", "trading/buy-db", policy.TCP, 5432); got != policy.Allow {
		t.Fatalf("before any policy: %s", got)
	}
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples)}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		from, to string
		want     policy.Action
	}{
		{"trading/buy-signal", "trading/buy-db", policy.Allow},
		{"trading/sell-signal", "trading/buy-db", policy.Deny}, // the wall
		{"trading/buy-signal", "trading/sell-db", policy.Deny},
	} {
		if got := a.dp.enforced(t, tc.from, tc.to, policy.TCP, 5432); got != tc.want {
			t.Errorf("%s -> %s: %s, want %s", tc.from, tc.to, got, tc.want)
		}
	}
	_, d := a.dp.snapshot()
	if len(d.Attachments) != 4 || d.Attachments[0].Interface == "" || len(d.Attachments[0].Addrs) == 0 {
		t.Fatalf("attachments: %+v", d.Attachments)
	}
}

func TestErrorsNameFileLineColumnAndField(t *testing.T) {
	a := startAgent(t, shortDir(t))
	bad := `apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: p, namespace: trading}
spec:
  appliesTo: {selector: {}}
  ingress:
    - action: allow
      form: [{any: true}]
`
	_, err := a.c.Apply(ctx, api.ApplyRequest{Documents: []api.Document{doc("policies/bad.yaml", bad)}})
	e := apiError(t, err)
	if e.Status != http.StatusUnprocessableEntity || len(e.Details) == 0 || !strings.Contains(e.Details[0], "policies/bad.yaml:8:7: spec.ingress[0].form") {
		t.Fatalf("%d %v", e.Status, e)
	}
	// A reference to a segment that is not there: the error is about the
	// whole set, and still names the place.
	ref := `apiVersion: bulkhead.dev/v1
kind: Wall
metadata: {name: w}
spec: {segments: [a, b]}
`
	_, err = a.c.Apply(ctx, api.ApplyRequest{Documents: []api.Document{doc("walls.yaml", ref)}})
	if e := apiError(t, err); !strings.Contains(e.Error(), `walls.yaml:1:1: spec.segments[0]: segment "a" does not exist`) {
		t.Fatalf("%v", e)
	}
}

func TestBreachIsRefusedWithTheCounterexample(t *testing.T) {
	a := startAgent(t, shortDir(t))
	for _, w := range inventory {
		if _, err := a.c.RegisterWorkload(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples)}); err != nil {
		t.Fatal(err)
	}
	_, err := a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, breach)})
	e := apiError(t, err)
	if e.Status != http.StatusConflict || !strings.Contains(e.Error(), `wall "buy-sell" breached`) || !strings.Contains(e.Error(), "examples/breach.yaml:11:7") {
		t.Fatalf("%d %v", e.Status, e)
	}
	if l, _ := a.c.Objects(ctx, "Policy"); len(l.Items) != 7 || l.Revision != 5 {
		t.Fatalf("the breach was stored: %d items, revision %d", len(l.Items), l.Revision)
	}
}

func TestNothingIsHalfApplied(t *testing.T) {
	a := startAgent(t, shortDir(t))
	good := doc("good.yaml", "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: dbs}\nspec: {selector: {matchLabels: {role: database}}}\n")
	broken := doc("broken.yaml", "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: x}\nspec: {cidrs: [{cidr: 10.0.0.0/33}]}\n")
	_, err := a.c.Apply(ctx, api.ApplyRequest{Documents: []api.Document{good, broken}})
	if e := apiError(t, err); !strings.Contains(e.Error(), "broken.yaml:4:") {
		t.Fatalf("%v", e)
	}
	if l, _ := a.c.Objects(ctx, ""); len(l.Items) != 0 || l.Revision != 0 {
		t.Fatalf("half applied: %d items", len(l.Items))
	}
	if _, err := os.Stat(a.dir + "/state/" + objectsFile); err == nil {
		t.Fatal("a refused apply wrote the state file")
	}

	// The dataplane refuses: nothing is stored, and the next apply works.
	a.dp.setFail(errBoom)
	_, err = a.c.Apply(ctx, api.ApplyRequest{Documents: []api.Document{good}})
	if e := apiError(t, err); e.Status != http.StatusServiceUnavailable || !strings.Contains(e.Error(), "boom") {
		t.Fatalf("%v", e)
	}
	if a.Revision() != 0 || len(a.Objects().Items) != 0 {
		t.Fatal("a change the dataplane refused was kept")
	}
	a.dp.setFail(nil)
	if res, err := a.c.Apply(ctx, api.ApplyRequest{Documents: []api.Document{good}}); err != nil || len(res.Created) != 1 {
		t.Fatalf("%+v %v", res, err)
	}

	// Deleting a segment a stored policy needs is refused, naming the policy.
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples)}); err != nil {
		t.Fatal(err)
	}
	seg := doc("seg.yaml", "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: internet}\nspec: {cidrs: [{cidr: 0.0.0.0/0}]}\n")
	_, err = a.c.Delete(ctx, api.ApplyRequest{Documents: []api.Document{seg}})
	if e := apiError(t, err); !strings.Contains(e.Error(), "30-payments.yaml:") || !strings.Contains(e.Error(), `segment "internet" does not exist`) {
		t.Fatalf("%v", e)
	}
}

func TestDeleteRemovesWhatItNames(t *testing.T) {
	a := startAgent(t, shortDir(t))
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples)}); err != nil {
		t.Fatal(err)
	}
	res, err := a.c.Delete(ctx, api.ApplyRequest{Documents: docs(t, examples+"/30-payments.yaml", examples+"/20-trading.yaml")})
	if err != nil || len(res.Deleted) != 6 || res.Revision != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	res, err = a.c.Delete(ctx, api.ApplyRequest{Documents: docs(t, examples+"/30-payments.yaml")})
	if err != nil || len(res.NotFound) != 3 || res.Revision != 2 {
		t.Fatalf("delete twice: %+v %v", res, err)
	}
	if l, _ := a.c.Objects(ctx, "policies"); len(l.Items) != 1 {
		t.Fatalf("%d policies left", len(l.Items))
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	a := startAgent(t, shortDir(t))
	res, err := a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples), DryRun: true})
	if err != nil || len(res.Created) != 15 || res.Revision != 0 {
		t.Fatalf("%+v %v", res, err)
	}
	if n, _ := a.dp.snapshot(); n != 1 || a.Revision() != 0 {
		t.Fatalf("dry run applied: %d applies", n)
	}
}

func TestKubernetesObjectsAndNamespaceLabels(t *testing.T) {
	a := startAgent(t, shortDir(t))
	k8s := `apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: red}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from: [{namespaceSelector: {matchLabels: {team: red}}}]
      ports: [{port: 5432}]
`
	res, err := a.c.Apply(ctx, api.ApplyRequest{Documents: []api.Document{doc("shop.yaml", k8s)}})
	if err != nil || len(res.Created) != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	for _, w := range []api.WorkloadRegistration{
		{Namespace: "shop", Name: "db", Labels: map[string]string{"app": "db"}, IPs: []string{"10.1.0.1"}, Interface: "bhdb"},
		{Namespace: "shop", Name: "web", IPs: []string{"10.1.0.2"}, Interface: "bhweb"},
		{Namespace: "other", Name: "web", IPs: []string{"10.1.0.3"}, Interface: "bhother"},
	} {
		if _, err := a.c.RegisterWorkload(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.dp.enforced(t, "shop/web", "shop/db", policy.TCP, 5432); got != policy.Allow {
		t.Errorf("same namespace: %s", got)
	}
	if got := a.dp.enforced(t, "other/web", "shop/db", policy.TCP, 5432); got != policy.Deny {
		t.Errorf("other namespace: %s", got)
	}
	// Relabel the namespace with a native Namespace: the same object.
	native := "apiVersion: bulkhead.dev/v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: blue}}\n"
	res, err = a.c.Apply(ctx, api.ApplyRequest{Documents: []api.Document{doc("ns.yaml", native)}})
	if err != nil || len(res.Updated) != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	if got := a.dp.enforced(t, "shop/web", "shop/db", policy.TCP, 5432); got != policy.Deny {
		t.Errorf("after relabel: %s", got)
	}
}

func TestRegisterWorkloads(t *testing.T) {
	a := startAgent(t, shortDir(t))
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples)}); err != nil {
		t.Fatal(err)
	}
	w := inventory[0]
	if _, err := a.c.RegisterWorkload(ctx, w); err != nil {
		t.Fatal(err)
	}
	_, d := a.dp.snapshot()
	if len(d.Attachments) != 1 || d.Attachments[0].Workload != "trading/buy-signal" || d.Attachments[0].Interface != "bhbuysig" {
		t.Fatalf("%+v", d.Attachments)
	}
	if id := d.State.Identity(d.Attachments[0].Addrs[0]); id == 0 {
		t.Fatal("the registered address has no identity in the state applied")
	}
	// Registering the same again changes nothing; another address clash is refused.
	rev := a.Revision()
	if _, err := a.c.RegisterWorkload(ctx, w); err != nil || a.Revision() != rev {
		t.Fatalf("re-register: %v, revision %d -> %d", err, rev, a.Revision())
	}
	clash := inventory[1]
	clash.IPs = []string{"10.10.1.10"}
	_, err := a.c.RegisterWorkload(ctx, clash)
	if e := apiError(t, err); e.Status != http.StatusConflict || !strings.Contains(e.Error(), "belongs to trading/buy-signal") {
		t.Fatalf("%v", e)
	}
	invalid := api.WorkloadRegistration{Namespace: "Bad_NS", Name: "x", IPs: []string{"300.1.1.1"}}
	_, err = a.c.RegisterWorkload(ctx, invalid)
	if e := apiError(t, err); e.Status != http.StatusUnprocessableEntity || len(e.Details) != 3 {
		t.Fatalf("%v", e)
	}
	if l, _ := a.c.Workloads(ctx); len(l) != 1 {
		t.Fatalf("%d workloads", len(l))
	}
	if err := a.c.UnregisterWorkload(ctx, "trading", "buy-signal"); err != nil {
		t.Fatal(err)
	}
	if err := a.c.UnregisterWorkload(ctx, "trading", "buy-signal"); err != nil {
		t.Fatalf("unregister twice: %v", err)
	}
	if _, d := a.dp.snapshot(); len(d.Attachments) != 0 {
		t.Fatalf("%+v", d.Attachments)
	}
}

// Registrations that queue while an Apply runs share the next one: with
// the dataplane held inside the first registration's Apply until the
// other n-1 are queued, the n registrations take exactly two applies.
func TestConcurrentRegistrationsShareApplies(t *testing.T) {
	a := startAgent(t, shortDir(t))
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples)}); err != nil {
		t.Fatal(err)
	}
	before, _ := a.dp.snapshot()
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	a.dp.mu.Lock()
	a.dp.gate, a.dp.entered = gate, entered
	a.dp.mu.Unlock()
	const n = 40
	errs := make(chan error, n)
	register := func(i int) {
		_, err := a.c.RegisterWorkload(ctx, api.WorkloadRegistration{Namespace: "trading", Name: fmt.Sprintf("w%d", i),
			Labels: map[string]string{"side": "buy"}, IPs: []string{fmt.Sprintf("10.20.0.%d", i+1)}, Interface: fmt.Sprintf("bhw%d", i)})
		errs <- err
	}
	go register(0)
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first registration did not reach the dataplane within 10 s")
	}
	for i := 1; i < n; i++ {
		go register(i)
	}
	for deadline := time.Now().Add(10 * time.Second); len(a.reqs) < n-1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d registrations queued after 10 s", len(a.reqs), n-1)
		}
	}
	a.dp.mu.Lock()
	a.dp.gate, a.dp.entered = nil, nil
	a.dp.mu.Unlock()
	close(gate)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	after, d := a.dp.snapshot()
	if len(d.Attachments) != n || a.Revision() < 2 {
		t.Fatalf("%d attachments, revision %d", len(d.Attachments), a.Revision())
	}
	if got := after - before; got != 2 {
		t.Fatalf("%d registrations took %d dataplane applies, want 2 (the first alone, the %d queued behind it together)", n, got, n-1)
	}
}

func TestExplainAgainstTheLiveState(t *testing.T) {
	a := startAgent(t, shortDir(t))
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples)}); err != nil {
		t.Fatal(err)
	}
	for _, w := range inventory {
		if _, err := a.c.RegisterWorkload(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := a.c.Explain(ctx, api.ExplainRequest{From: "trading/buy-signal", To: "trading/sell-db", Port: 5432})
	if err != nil {
		t.Fatal(err)
	}
	if s := string(raw); !strings.Contains(s, `"verdict":"deny"`) || !strings.Contains(s, `"wall":"buy-sell"`) || !strings.Contains(s, "DENY") {
		t.Fatalf("%s", raw)
	}
	_, err = a.c.Explain(ctx, api.ExplainRequest{From: "trading/nobody", To: "10.0.0.1", Port: 80})
	if e := apiError(t, err); e.Status != http.StatusBadRequest || !strings.Contains(e.Error(), "no workload trading/nobody is registered") {
		t.Fatalf("%v", e)
	}
}

func TestStatusAndCounters(t *testing.T) {
	a := startAgent(t, shortDir(t))
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples)}); err != nil {
		t.Fatal(err)
	}
	st, err := a.c.Status(ctx)
	if err != nil || st.Host != "h1" || st.Policies != 7 || st.Revision != 1 || st.MemoryBytes == 0 {
		t.Fatalf("%+v %v", st, err)
	}
	for _, w := range inventory {
		if _, err := a.c.RegisterWorkload(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	a.dp.enforced(t, "trading/buy-signal", "trading/buy-db", policy.TCP, 5432)
	c, err := a.c.Counters(ctx)
	if err != nil || c.Rules["Policy/trading/buy-db/ingress/from-buy-signal"].Packets != 1 {
		t.Fatalf("%+v %v", c, err)
	}
	if h, err := a.c.Health(ctx); err != nil || h.Status != "ok" {
		t.Fatalf("%+v %v", h, err)
	}
}

func TestRegistrationAnswersOnlyOnceEnforced(t *testing.T) {
	a := startAgent(t, shortDir(t))
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples)}); err != nil {
		t.Fatal(err)
	}
	for _, w := range inventory[1:] {
		if _, err := a.c.RegisterWorkload(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	gate := make(chan struct{})
	a.dp.mu.Lock()
	a.dp.gate = gate
	a.dp.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		_, err := a.c.RegisterWorkload(ctx, inventory[0])
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("the registration returned before the dataplane enforced it: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	a.dp.mu.Lock()
	a.dp.gate = nil
	a.dp.mu.Unlock()
	close(gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := a.dp.enforced(t, "trading/buy-signal", "trading/sell-db", policy.TCP, 5432); got != policy.Deny {
		t.Fatalf("the new workload's first connection: %s", got)
	}
}

func TestAFailedWriteRollsBack(t *testing.T) {
	a := startAgent(t, shortDir(t))
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples)}); err != nil {
		t.Fatal(err)
	}
	// A directory in the way makes the rename of the state file fail.
	os.MkdirAll(filepath.Join(a.dir, "state", workloadsFile, "x"), 0o700)
	_, err := a.c.RegisterWorkload(ctx, inventory[0])
	if e := apiError(t, err); e.Status != http.StatusInternalServerError || !strings.Contains(e.Error(), "rolled back") {
		t.Fatalf("%v", e)
	}
	if _, d := a.dp.snapshot(); len(d.Attachments) != 0 || a.Revision() != 1 || len(a.Workloads()) != 0 {
		t.Fatalf("not rolled back: %d attachments, revision %d", len(d.Attachments), a.Revision())
	}
	os.RemoveAll(filepath.Join(a.dir, "state", workloadsFile))
	if _, err := a.c.RegisterWorkload(ctx, inventory[0]); err != nil {
		t.Fatal(err)
	}
}

// A change of policies alone, without walls, is checked without the whole
// set: what it names must still exist, with the error validate words.
func TestPolicyChangeNamingAMissingSegmentIsRefused(t *testing.T) {
	a := startAgent(t, shortDir(t))
	seg := doc("seg.yaml", "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: dbs}\nspec: {selector: {matchLabels: {role: database}}}\n")
	pol := func(segment string) api.Document {
		return doc("pol.yaml", "apiVersion: bulkhead.dev/v1\nkind: Policy\nmetadata: {name: p, namespace: n}\nspec:\n  appliesTo: {segment: dbs}\n  ingress: [{action: allow, from: [{segment: "+segment+"}]}]\n")
	}
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: []api.Document{seg, pol("dbs")}}); err != nil {
		t.Fatal(err)
	}
	rev := a.Revision()
	_, err := a.c.Apply(ctx, api.ApplyRequest{Documents: []api.Document{pol("nowhere")}})
	if e := apiError(t, err); !strings.Contains(e.Error(), `pol.yaml:6:13: spec.ingress[0].from[0].segment`) || !strings.Contains(e.Error(), `segment "nowhere" does not exist`) {
		t.Fatalf("%v", e)
	}
	if a.Revision() != rev {
		t.Fatalf("a refused apply changed the revision: %d → %d", rev, a.Revision())
	}
}
