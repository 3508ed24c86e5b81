package escalations_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/auditlog"
	"github.com/bulkhead-dev/bulkhead/internal/manager/escalations"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

const rules = `apiVersion: bulkhead.dev/v1
kind: DecisionRule
metadata: {name: reports}
spec:
  order: 10
  escalations: {rules: [{namespace: shop, policy: db, rule: ask}]}
  condition: source.labels.?app.orValue("") == "report"
  outcome: allow
  remember: 5m
---
apiVersion: bulkhead.dev/v1
kind: DecisionRule
metadata: {name: ask-a-person}
spec:
  order: 20
  escalations: {rules: [{namespace: shop, policy: db, rule: ask}]}
  outcome: hold
  holdTimeout: 1s
  onTimeout: deny
`

type fixture struct {
	st  store.Store
	svc *escalations.Service
	rev atomic.Int64
}

func newFixture(t *testing.T, doc string, cfg escalations.Config) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := auditlog.New(auditlog.Config{Store: st, Dir: dir})
	if err := log.LoadHead(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))); err != nil {
		t.Fatal(err)
	}
	f := &fixture{st: st}
	f.rev.Store(1)
	set := readRules(t, doc)
	cfg.Rules = escalations.RulesFunc(func(context.Context) (int64, []*policy.DecisionRule, error) { return f.rev.Load(), set, nil })
	cfg.Audit = log
	if f.svc, err = escalations.New(cfg); err != nil {
		t.Fatal(err)
	}
	return f
}

func readRules(t *testing.T, doc string) []*policy.DecisionRule {
	t.Helper()
	objs, errs := objects.Read("rules.yaml", []byte(doc))
	if len(errs) > 0 {
		t.Fatalf("read: %v", errs)
	}
	var out []*policy.DecisionRule
	for _, o := range objs {
		out = append(out, o.Set.DecisionRules...)
	}
	return out
}

func ask(app string) api.EscalationRequest {
	return api.EscalationRequest{Protocol: "tcp", Port: 5432, SourcePort: 40000,
		Source:      api.EscalationEndpoint{Address: "10.0.0.1", Namespace: "shop", Name: app + "-1", Labels: map[string]string{"app": app}, Identity: 7},
		Destination: api.EscalationEndpoint{Address: "10.0.0.2", Namespace: "shop", Name: "db-1", Labels: map[string]string{"app": "db"}},
		Rules:       []api.EscalationRuleRef{{Namespace: "shop", Policy: "db", Rule: "ask"}},
		Deadline:    time.Now().Add(30 * time.Second)}
}

// auditActions lists the actions of the audit log's entries about
// escalations, with their actors.
func (f *fixture) audited(t *testing.T) map[string][]audit.Actor {
	t.Helper()
	entries, err := audit.ReadRange(context.Background(), f.st, 1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]audit.Actor{}
	for _, e := range entries {
		out[e.Object+" "+e.Action] = append(out[e.Object+" "+e.Action], e.Actor)
	}
	return out
}

func waitHeld(t *testing.T, svc *escalations.Service) api.Escalation {
	t.Helper()
	for range 200 {
		for _, e := range svc.List() {
			if e.State == api.EscalationHeld {
				return e
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("nothing held")
	return api.Escalation{}
}

func TestConditionAllows(t *testing.T) {
	f := newFixture(t, rules, escalations.Config{})
	d, err := f.svc.Ask(context.Background(), "node-1", ask("report"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Verdict != api.VerdictAllow || d.Remember != "5m0s" {
		t.Fatalf("decision %+v, want allow remembered 5m", d)
	}
	rec, _ := f.svc.Get(d.ID)
	if rec.State != api.EscalationDecided || rec.Rule != "reports" || rec.By != "" || rec.Decided == nil || rec.Host != "node-1" {
		t.Errorf("record %+v, want decided by rule reports", rec)
	}
	if got := f.audited(t)["escalations/"+d.ID+" escalation.decide"]; len(got) != 1 || got[0] != auditlog.System {
		t.Errorf("audit entries %v, want one by the manager", got)
	}
}

func TestHeldUntilApproved(t *testing.T) {
	f := newFixture(t, rules, escalations.Config{})
	changes, stop := f.svc.Follow()
	defer stop()
	done := make(chan api.EscalationDecision, 1)
	go func() {
		r := ask("web")
		r.Deadline = time.Now().Add(10 * time.Second)
		d, _ := f.svc.Ask(context.Background(), "node-1", r)
		done <- d
	}()
	held := waitHeld(t, f.svc)
	person := audit.Actor{Kind: "token", Name: "alice", Role: api.RoleOperator}
	rec, err := f.svc.Approve(context.Background(), held.ID, person, "token:alice (operator)", "a known report")
	if err != nil {
		t.Fatal(err)
	}
	d := <-done
	if d.Verdict != api.VerdictAllow || d.Remember != "" || rec.By != "token:alice (operator)" || rec.Outcome != "allow" {
		t.Fatalf("decision %+v record %+v, want allowed by alice, not remembered", d, rec)
	}
	if _, err := f.svc.Deny(context.Background(), held.ID, person, "token:alice (operator)", ""); !errors.Is(err, fault.Conflict) {
		t.Errorf("second answer: %v, want a conflict", err)
	}
	if _, err := f.svc.Approve(context.Background(), "nope", person, "x", ""); !errors.Is(err, fault.NotFound) {
		t.Errorf("unknown id: %v, want not found", err)
	}
	a := f.audited(t)
	if got := a["escalations/"+held.ID+" escalation.decide"]; len(got) != 1 || got[0] != person {
		t.Errorf("audit %v, want the decision by alice", got)
	}
	if len(a["escalations/"+held.ID+" escalation.hold"]) != 1 {
		t.Errorf("the hold is not audited: %v", a)
	}
	var states []string
	for range 2 {
		select {
		case c := <-changes:
			states = append(states, c.State)
		case <-time.After(time.Second):
			t.Fatalf("follow: got %v, want held then decided", states)
		}
	}
	if states[0] != api.EscalationHeld || states[1] != api.EscalationDecided {
		t.Errorf("follow: %v, want held then decided", states)
	}
}

func TestHoldTimesOut(t *testing.T) {
	f := newFixture(t, rules, escalations.Config{})
	start := time.Now()
	d, err := f.svc.Ask(context.Background(), "node-1", ask("web"))
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); d.Verdict != api.VerdictDeny || took < 900*time.Millisecond || took > 5*time.Second {
		t.Fatalf("decision %+v after %s, want deny after the 1s hold", d, took)
	}
	rec, _ := f.svc.Get(d.ID)
	if rec.By != escalations.ByTimeout || rec.Outcome != "deny" {
		t.Errorf("record %+v, want denied by timeout", rec)
	}
}

func TestAgentDeadlineBoundsTheHold(t *testing.T) {
	f := newFixture(t, rules, escalations.Config{})
	r := ask("web")
	r.Deadline = time.Now().Add(50 * time.Millisecond)
	start := time.Now()
	d, _ := f.svc.Ask(context.Background(), "node-1", r)
	if took := time.Since(start); d.Verdict != api.VerdictDeny || took > 250*time.Millisecond {
		t.Fatalf("decision %+v after %s, want deny by the agent's deadline", d, took)
	}
}

func TestBounded(t *testing.T) {
	f := newFixture(t, rules, escalations.Config{MaxRecords: 5, MaxHeld: 1})
	for range 8 {
		if _, err := f.svc.Ask(context.Background(), "node-1", ask("report")); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(f.svc.List()); n != 5 {
		t.Errorf("%d records kept, want 5", n)
	}
	go f.svc.Ask(context.Background(), "node-1", ask("web")) //nolint:errcheck // held until it times out
	waitHeld(t, f.svc)
	d, _ := f.svc.Ask(context.Background(), "node-1", ask("web"))
	if d.Verdict != api.VerdictDeny {
		t.Errorf("a second hold past MaxHeld 1: %+v, want denied at once", d)
	}
}

func TestInvalidRequest(t *testing.T) {
	f := newFixture(t, rules, escalations.Config{})
	r := ask("web")
	r.Protocol = "gre"
	if _, err := f.svc.Ask(context.Background(), "node-1", r); !errors.Is(err, fault.Invalid) {
		t.Errorf("protocol gre: %v, want invalid", err)
	}
	r = ask("web")
	r.Source.Address = "nowhere"
	if _, err := f.svc.Ask(context.Background(), "node-1", r); !errors.Is(err, fault.Invalid) {
		t.Errorf("bad address: %v, want invalid", err)
	}
}

type inventory map[netip.Addr]api.HostWorkload

func (i inventory) Owner(a netip.Addr) (api.HostWorkload, bool) { w, ok := i[a]; return w, ok }

// Hosts speak only for themselves: the manager's inventory names the
// ends, whatever the agent claims, and a host may ask only about its own
// workloads' connections.
func TestInventoryVouches(t *testing.T) {
	inv := inventory{
		netip.MustParseAddr("10.0.0.1"): {Host: "node-1", Namespace: "shop", Name: "report-1", Labels: map[string]string{"app": "report"}},
		netip.MustParseAddr("10.0.0.2"): {Host: "node-1", Namespace: "shop", Name: "db-1", Labels: map[string]string{"app": "db"}},
	}
	f := newFixture(t, rules, escalations.Config{Inventory: inv})
	lying := ask("web") // claims to be web; the inventory says report
	d, err := f.svc.Ask(context.Background(), "node-1", lying)
	if err != nil || d.Verdict != api.VerdictAllow {
		t.Fatalf("%+v %v, want allowed as the report the inventory names", d, err)
	}
	if rec, _ := f.svc.Get(d.ID); rec.Source.Name != "report-1" || rec.Source.Labels["app"] != "report" || rec.Source.Host != "node-1" {
		t.Errorf("record %+v, want the inventory's source", rec.Source)
	}
	if _, err := f.svc.Ask(context.Background(), "node-2", ask("report")); !errors.Is(err, fault.Forbidden) {
		t.Errorf("another host asking: %v, want forbidden", err)
	}
	unknown := ask("report")
	unknown.Source.Address = "10.0.0.9" // claims report's labels for an address nobody reported
	unknown.Deadline = time.Now().Add(100 * time.Millisecond)
	d, err = f.svc.Ask(context.Background(), "node-1", unknown)
	if err != nil || d.Verdict != api.VerdictDeny {
		t.Fatalf("%+v %v, want an outside source: held, then denied", d, err)
	}
	if rec, _ := f.svc.Get(d.ID); rec.Source.Name != "" || rec.Source.Labels != nil {
		t.Errorf("record %+v, want an outside address without the claimed labels", rec.Source)
	}
}
