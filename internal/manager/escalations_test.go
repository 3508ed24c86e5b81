package manager_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
)

func init() {
	// The schemas the escalations routes added to api/openapi.yaml.
	for name, typ := range map[string]any{"EscalationEndpoint": api.EscalationEndpoint{}, "EscalationRuleRef": api.EscalationRuleRef{},
		"EscalationRequest": api.EscalationRequest{}, "EscalationDecision": api.EscalationDecision{}, "Escalation": api.Escalation{},
		"EscalationList": api.EscalationList{}, "EscalationAnswer": api.EscalationAnswer{}} {
		schemaTypes[name] = typ
	}
}

const escalationRules = `apiVersion: bulkhead.dev/v1
kind: DecisionRule
metadata: {name: reports}
spec:
  order: 10
  condition: source.labels.?app.orValue("") == "report"
  outcome: allow
---
apiVersion: bulkhead.dev/v1
kind: DecisionRule
metadata: {name: batch-briefly}
spec:
  order: 20
  escalations: {from: {namespaces: [shop], selector: {matchLabels: {app: batch}}}}
  outcome: hold
  holdTimeout: 1s
---
apiVersion: bulkhead.dev/v1
kind: DecisionRule
metadata: {name: ask}
spec:
  order: 30
  outcome: hold
  holdTimeout: 1m
`

// escalationApps are the workloads of host node-1, by app label.
var escalationApps = map[string]string{"report": "10.1.0.1", "web": "10.1.0.2", "batch": "10.1.0.3", "db": "10.1.0.9"}

// joinWithWorkloads joins node-1 and reports its workloads: the manager
// vouches for an escalation's ends from them.
func joinWithWorkloads(t *testing.T, e *env) *client.Client {
	t.Helper()
	agent, _ := e.join("node-1")
	var ws []api.HostWorkload
	for app, ip := range escalationApps {
		ws = append(ws, api.HostWorkload{Host: "node-1", Namespace: "shop", Name: app, Labels: map[string]string{"app": app}, IPs: []string{ip}})
	}
	if _, err := agent.ReportWorkloads(ctx(t), "node-1", ws, nil, true); err != nil {
		t.Fatal(err)
	}
	for range 200 {
		if l, err := e.admin.Workloads(ctx(t), "node-1"); err == nil && len(l.Items) == len(ws) {
			return agent
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the manager does not list node-1's workloads")
	return nil
}

func escalation(app string) api.EscalationRequest {
	return api.EscalationRequest{Protocol: "tcp", Port: 5432,
		Source:      api.EscalationEndpoint{Address: escalationApps[app], Namespace: "shop", Name: app, Labels: map[string]string{"app": app}},
		Destination: api.EscalationEndpoint{Address: escalationApps["db"], Namespace: "shop", Name: "db"},
		Rules:       []api.EscalationRuleRef{{Namespace: "shop", Policy: "db", Rule: "ask"}}, Deadline: time.Now().Add(20 * time.Second)}
}

// An agent asks; a condition allows one, an operator approves another
// (the auditor may not), a third times out to deny; all are audited.
func TestEscalationsOverTheAPI(t *testing.T) {
	e := start(t)
	if _, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("rules.yaml", escalationRules)}); err != nil {
		t.Fatal(err)
	}
	agent := joinWithWorkloads(t, e)
	operator, auditor := e.token("olga", api.RoleOperator), e.token("audrey", api.RoleAuditor)

	d, err := agent.Escalate(ctx(t), escalation("report"))
	if err != nil || d.Verdict != api.VerdictAllow {
		t.Fatalf("report: %+v %v, want allowed by the condition", d, err)
	}
	_, err = operator.Escalate(ctx(t), escalation("report"))
	wantStatus(t, err, http.StatusForbidden, "agent")
	other, _ := e.join("node-2")
	_, err = other.Escalate(ctx(t), escalation("report"))
	wantStatus(t, err, http.StatusForbidden, "its own workloads")

	held := make(chan api.EscalationDecision, 1)
	go func() {
		d, err := agent.Escalate(context.Background(), escalation("web"))
		if err != nil {
			t.Error(err)
		}
		held <- d
	}()
	var id string
	for i := 0; id == "" && i < 200; i++ {
		list, err := auditor.Escalations(ctx(t), api.EscalationHeld)
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) > 0 {
			id = list.Items[0].ID
		}
		time.Sleep(10 * time.Millisecond)
	}
	if id == "" {
		t.Fatal("the web escalation is not held")
	}
	_, err = auditor.ApproveEscalation(ctx(t), id, "")
	wantStatus(t, err, http.StatusForbidden, "operator")
	rec, err := operator.ApproveEscalation(ctx(t), id, "known")
	if err != nil || rec.Outcome != "allow" || rec.By != "token:olga (operator)" {
		t.Fatalf("approve: %+v %v", rec, err)
	}
	if d := <-held; d.Verdict != api.VerdictAllow || d.ID != id {
		t.Fatalf("the agent got %+v, want allow for %s", d, id)
	}
	_, err = operator.DenyEscalation(ctx(t), id, "")
	wantStatus(t, err, http.StatusConflict, "decided already")

	start := time.Now()
	d, err = agent.Escalate(ctx(t), escalation("batch"))
	if err != nil || d.Verdict != api.VerdictDeny || time.Since(start) < 900*time.Millisecond {
		t.Fatalf("batch: %+v %v after %s, want denied by its 1s timeout", d, err, time.Since(start))
	}

	list, err := auditor.Escalations(ctx(t), "")
	if err != nil || len(list.Items) != 3 {
		t.Fatalf("list: %+v %v, want 3", list, err)
	}
	decided := map[string]string{}
	refused := false
	for _, en := range auditFrom(t, e, 0) {
		if en.Action == "escalation.decide" {
			decided[en.Object] = en.Actor.Kind + ":" + en.Actor.Name
		}
		refused = refused || (en.Action == "access.refused" && en.Object == "POST /v1/escalations/"+id+"/approve" && en.Actor.Name == "audrey")
	}
	if !refused {
		t.Error("the auditor's refused approval is not in the audit log")
	}
	for _, it := range list.Items {
		want := "system:manager"
		if it.ID == id {
			want = "token:olga"
		}
		if decided["escalations/"+it.ID] != want {
			t.Errorf("escalation %s (%s): audited as %q, want %q", it.ID, it.Source.Name, decided["escalations/"+it.ID], want)
		}
	}
}

// A follower sees an escalation held, then decided.
func TestFollowEscalations(t *testing.T) {
	e := start(t)
	if _, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("rules.yaml", escalationRules)}); err != nil {
		t.Fatal(err)
	}
	agent := joinWithWorkloads(t, e)
	operator := e.token("olga", api.RoleOperator)
	fctx, cancel := context.WithTimeout(ctx(t), 10*time.Second)
	defer cancel()
	var states []string
	go func() {
		d, _ := agent.Escalate(fctx, escalation("web"))
		_ = d
	}()
	err := operator.FollowEscalations(fctx, "", func(x api.Escalation) error {
		states = append(states, x.State)
		if x.State == api.EscalationHeld {
			if _, err := operator.DenyEscalation(fctx, x.ID, "no"); err != nil {
				return err
			}
		}
		if x.State == api.EscalationDecided {
			cancel()
		}
		return nil
	})
	if got := strings.Join(states, ","); got != "held,decided" {
		t.Fatalf("followed %q (%v), want held,decided", got, err)
	}
}
