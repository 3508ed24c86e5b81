package ask

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/escalate"
)

const dbPolicy = `apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: shop}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress:
    - {name: ask, action: escalate, from: [{selector: {}}], services: [{protocol: tcp, port: 5432}]}
    - {action: allow, from: [{selector: {}}], services: [{protocol: tcp, port: 80}]}
`

// The resolver names both ends from the agent's workloads and the rule
// that escalates from its compiled state; a connection the policy no
// longer escalates is answered by the policy without the manager.
func TestResolveFromTheAgentsState(t *testing.T) {
	ctx := context.Background()
	a, err := agent.Start(ctx, agent.Options{StateDir: t.TempDir(), Host: "node-1", Dataplane: dataplane.NewUserspace()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Apply(ctx, api.ApplyRequest{Documents: []api.Document{{Name: "db.yaml", Data: dbPolicy}}}); err != nil {
		t.Fatal(err)
	}
	for name, ip := range map[string]string{"db": "10.0.0.2", "web": "10.0.0.1"} {
		if _, err := a.RegisterWorkload(ctx, api.WorkloadRegistration{Namespace: "shop", Name: name, IPs: []string{ip},
			Labels: map[string]string{"app": name}, Interface: "bhew" + name}); err != nil {
			t.Fatal(err)
		}
	}
	r := &resolver{a: a, timeout: DefaultTimeout}
	conn := escalate.Conn{Proto: 6, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), SrcPort: 40000, DstPort: 5432}
	ends, err := r.Resolve(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if ends.Src.Name != "web" || ends.Dst.Name != "db" || ends.Src.Labels["app"] != "web" || ends.Src.Identity == 0 || ends.Timeout != DefaultTimeout {
		t.Errorf("ends %+v", ends)
	}
	ref, ok := ruleRef(ends.Rule)
	if !ok || ref != (api.EscalationRuleRef{Namespace: "shop", Policy: "db", Rule: "ask"}) {
		t.Errorf("rule %q read as %+v", ends.Rule, ref)
	}

	// Past MaxAsking questions open, a connection is denied without asking.
	full := &decider{res: r, asking: make(chan struct{}, 1)}
	full.asking <- struct{}{}
	if _, err := full.Decide(ctx, escalate.Request{Conn: conn, Src: ends.Src, Dst: ends.Dst, Rule: ends.Rule}); err == nil ||
		!strings.Contains(err.Error(), "open at the manager") {
		t.Errorf("past MaxAsking: %v, want refused at once", err)
	}

	conn.DstPort = 80 // allowed by the policy now: no question for the manager
	ends, _ = r.Resolve(ctx, conn)
	d := &decider{res: r}
	dec, err := d.Decide(ctx, escalate.Request{Conn: conn, Src: ends.Src, Dst: ends.Dst, Rule: ends.Rule})
	if err != nil || dec.Verdict != escalate.Allow {
		t.Errorf("port 80: %+v %v, want allowed by the policy", dec, err)
	}
}

func TestRuleRef(t *testing.T) {
	for id, want := range map[string]api.EscalationRuleRef{
		"Policy/shop/db/ingress/ask": {Namespace: "shop", Policy: "db", Rule: "ask"},
		"Policy/global/egress/0":     {Policy: "global", Rule: "0"},
	} {
		if got, ok := ruleRef(id); !ok || got != want {
			t.Errorf("%s: %+v, want %+v", id, got, want)
		}
	}
	if _, ok := ruleRef("nonsense"); ok {
		t.Error("nonsense read as a rule id")
	}
}
