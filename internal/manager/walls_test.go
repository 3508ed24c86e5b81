package manager_test

import (
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/manager/bindings"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
)

// bhbwWalls are two conflict classes over the datasets cards and ledger
// of namespace bhbw-pay: one of session scope, one of lifecycle scope
// (the same databases, told apart by port in the requests below: the
// class is what the dataplane names).
const bhbwWalls = `apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: bhbw-cards}
spec: {namespaces: [bhbw-pay], selector: {matchLabels: {dataset: cards}}}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: bhbw-ledger}
spec: {namespaces: [bhbw-pay], selector: {matchLabels: {dataset: ledger}}}
---
apiVersion: bulkhead.dev/v1
kind: ConflictClass
metadata: {name: bhbw-tx}
spec:
  datasets: [{name: cards, segment: bhbw-cards}, {name: ledger, segment: bhbw-ledger}]
  scope: session
---
apiVersion: bulkhead.dev/v1
kind: ConflictClass
metadata: {name: bhbw-life}
spec:
  datasets: [{name: cards, segment: bhbw-cards}, {name: ledger, segment: bhbw-ledger}]
---
apiVersion: bulkhead.dev/v1
kind: DecisionRule
metadata: {name: bhbw-anything}
spec:
  order: 10
  escalations: {rules: [{namespace: bhbw-pay, policy: proc, rule: ask}], conflictClasses: [bhbw-life]}
  outcome: allow
`

var bhbwAddrs = map[string]string{"proc": "10.7.0.1", "cards": "10.7.0.2", "ledger": "10.7.0.3"}

func joinBhbw(t *testing.T, e *env) *client.Client {
	t.Helper()
	agent, _ := e.join("bhbw-node")
	ws := []api.HostWorkload{
		{Host: "bhbw-node", Namespace: "bhbw-pay", Name: "proc", Labels: map[string]string{"app": "proc"}, IPs: []string{bhbwAddrs["proc"]}},
		{Host: "bhbw-node", Namespace: "bhbw-pay", Name: "cards", Labels: map[string]string{"dataset": "cards"}, IPs: []string{bhbwAddrs["cards"]}},
		{Host: "bhbw-node", Namespace: "bhbw-pay", Name: "ledger", Labels: map[string]string{"dataset": "ledger"}, IPs: []string{bhbwAddrs["ledger"]}},
	}
	if _, err := agent.ReportWorkloads(ctx(t), "bhbw-node", ws, nil, true); err != nil {
		t.Fatal(err)
	}
	for range 200 {
		if l, err := e.admin.Workloads(ctx(t), "bhbw-node"); err == nil && len(l.Items) == len(ws) {
			return agent
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the manager does not list bhbw-node's workloads")
	return nil
}

// classAccess is proc's first packet to db, held by the dataplane for
// class. The agent's claims about the ends are left out: the manager
// vouches for them from its inventory.
func classAccess(class, db string, rules ...api.EscalationRuleRef) api.EscalationRequest {
	return api.EscalationRequest{Protocol: "tcp", Port: 5432, ConflictClass: class, Rules: rules,
		Source:      api.EscalationEndpoint{Address: bhbwAddrs["proc"]},
		Destination: api.EscalationEndpoint{Address: bhbwAddrs[db]}, Deadline: time.Now().Add(10 * time.Second)}
}

func wantVerdict(t *testing.T, agent *client.Client, req api.EscalationRequest, verdict, reason string) {
	t.Helper()
	d, err := agent.Escalate(ctx(t), req)
	if err != nil {
		t.Fatalf("%s -> %s: %v", req.ConflictClass, req.Destination.Address, err)
	}
	if d.Verdict != verdict || !strings.Contains(d.Reason, reason) {
		t.Fatalf("%s -> %s: %+v, want %s with a reason saying %q", req.ConflictClass, req.Destination.Address, d, verdict, reason)
	}
}

// The first access to a class binds the workload and allows; the other
// dataset is then denied by the binding, the same one allowed; the end
// of the session (End) or of the instance (Release) frees it. Every
// decision is recorded and audited.
func TestConflictClassEscalations(t *testing.T) {
	e := start(t)
	if _, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("walls.yaml", bhbwWalls)}); err != nil {
		t.Fatal(err)
	}
	agent := joinBhbw(t, e)
	wantVerdict(t, agent, classAccess("bhbw-tx", "cards"), api.VerdictAllow, "bound to dataset cards")
	wantVerdict(t, agent, classAccess("bhbw-tx", "ledger"), api.VerdictDeny, "bound to dataset cards of conflict class bhbw-tx")
	wantVerdict(t, agent, classAccess("bhbw-tx", "cards"), api.VerdictAllow, "bound to dataset cards")
	if _, err := e.m.Bindings().End(ctx(t), audit.Actor{Kind: "token", Name: "bhbw-op", Role: "operator"}, bindings.Workload{Namespace: "bhbw-pay", Name: "proc"}, "bhbw-tx"); err != nil {
		t.Fatal(err)
	}
	wantVerdict(t, agent, classAccess("bhbw-tx", "ledger"), api.VerdictAllow, "bound to dataset ledger")
	wantVerdict(t, agent, classAccess("bhbw-tx", "cards"), api.VerdictDeny, "bound to dataset ledger")

	// With escalating rules: the binding comes first, whatever the rules
	// say; the rules decide the rest.
	ask := api.EscalationRuleRef{Namespace: "bhbw-pay", Policy: "proc", Rule: "ask"}
	wantVerdict(t, agent, classAccess("bhbw-life", "ledger", ask), api.VerdictAllow, "bound to dataset ledger")
	wantVerdict(t, agent, classAccess("bhbw-life", "cards", ask), api.VerdictDeny, "bound to dataset ledger of conflict class bhbw-life")
	freed, err := e.m.Bindings().Release(ctx(t), bindings.Workload{Namespace: "bhbw-pay", Name: "proc"})
	if err != nil || len(freed) != 1 {
		t.Fatalf("release: %+v, %v; want the lifecycle binding freed", freed, err)
	}
	wantVerdict(t, agent, classAccess("bhbw-life", "cards", ask), api.VerdictAllow, "bound to dataset cards")

	list, err := e.admin.Escalations(ctx(t), "")
	if err != nil || len(list.Items) != 8 {
		t.Fatalf("list: %d %v, want 8 decided", len(list.Items), err)
	}
	decided, bound := 0, 0
	for _, en := range auditFrom(t, e, 0) {
		switch en.Action {
		case "escalation.decide":
			decided++
		case "binding.bind":
			bound++
		}
	}
	if decided != 8 || bound != 4 {
		t.Fatalf("audited %d decisions and %d binds, want 8 and 4", decided, bound)
	}
}

// A lifecycle binding ends when the workload's record leaves the
// inventory — the host's report deletes it, or an operator does — and
// not when the workload is registered again (a restart with a new
// container id keeps its identity and its bindings).
func TestLifecycleBindingEndsWithTheRecord(t *testing.T) {
	e := start(t)
	if _, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("walls.yaml", bhbwWalls)}); err != nil {
		t.Fatal(err)
	}
	agent := joinBhbw(t, e)
	ask := api.EscalationRuleRef{Namespace: "bhbw-pay", Policy: "proc", Rule: "ask"}
	proc := api.HostWorkload{Host: "bhbw-node", Namespace: "bhbw-pay", Name: "proc", Labels: map[string]string{"app": "proc"},
		IPs: []string{bhbwAddrs["proc"]}}
	report := func(put []api.HostWorkload, deleted []string) {
		t.Helper()
		if _, err := agent.ReportWorkloads(ctx(t), "bhbw-node", put, deleted, false); err != nil {
			t.Fatal(err)
		}
	}
	report([]api.HostWorkload{proc}, nil)
	wantVerdict(t, agent, classAccess("bhbw-life", "ledger", ask), api.VerdictAllow, "bound to dataset ledger")

	// Registered again, its record rewritten (a restart): still bound.
	proc.Ports = []api.NamedPort{{Name: "metrics", Port: 9100, Protocol: "tcp"}}
	report([]api.HostWorkload{proc}, nil)
	wantVerdict(t, agent, classAccess("bhbw-life", "cards", ask), api.VerdictDeny, "bound to dataset ledger")

	// The host's report deletes the record: the binding goes.
	report(nil, []string{"bhbw-pay/proc"})
	if bs, err := e.admin.Bindings(ctx(t)); err != nil || len(bs.Items) != 0 {
		t.Fatalf("bindings after the record went: %+v, %v", bs, err)
	}
	report([]api.HostWorkload{proc}, nil)
	wantVerdict(t, agent, classAccess("bhbw-life", "cards", ask), api.VerdictAllow, "bound to dataset cards")

	// An operator deletes the record: the binding goes too; a session
	// binding stays (it ends by its own scope).
	wantVerdict(t, agent, classAccess("bhbw-tx", "cards"), api.VerdictAllow, "bound to dataset cards")
	if err := e.admin.DeleteWorkload(ctx(t), "bhbw-node", "bhbw-pay", "proc"); err != nil {
		t.Fatal(err)
	}
	bs, err := e.admin.Bindings(ctx(t))
	if err != nil || len(bs.Items) != 1 || bs.Items[0].Class != "bhbw-tx" {
		t.Fatalf("bindings after the operator's delete: %+v, %v; want the session's only", bs, err)
	}
	released := 0
	for _, en := range auditFrom(t, e, 0) {
		if en.Action == "binding.release" {
			released++
		}
	}
	if released != 2 {
		t.Fatalf("%d binding.release entries, want 2", released)
	}
}
