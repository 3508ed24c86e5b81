package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
)

// risk is a workload with no side: the wall does not concern it, and
// only its destination's ingress policy denies it.
const riskPolicy = `apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: risk, namespace: trading}
spec:
  appliesTo: {selector: {matchLabels: {role: risk}}}
  egress:
    - name: to-databases
      action: allow
      to: [{selector: {matchLabels: {role: database}}}]
      services: [{protocol: tcp, port: postgres}]
`

// buy-db, changed while node-3 is away: it also takes risk (which must
// not be on either side, or the wall is refused).
const buyDBWithRisk = `apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: buy-db, namespace: trading}
spec:
  tier: application
  priority: 100
  appliesTo: {selector: {matchLabels: {role: database, side: buy}}}
  ingress:
    - name: from-buy-signal
      action: allow
      from: [{selector: {matchLabels: {role: buy-signal, side: buy}}}]
      services: [{protocol: tcp, port: postgres}]
    - name: from-risk
      action: allow
      from: [{selector: {matchLabels: {role: risk}, matchExpressions: [{key: side, operator: DoesNotExist}]}}]
      services: [{protocol: tcp, port: postgres}]
`

const sellDBPolicy = `apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: sell-db, namespace: trading}
`

// Three hosts, one manager, the trading floor spread over them: policy
// between hosts is enforced on both (egress at the source, ingress at
// the destination), the hosts keep enforcing while the manager is gone,
// and a host that was away converges to the revision made meanwhile.
func TestThreeHosts(t *testing.T) {
	start := time.Now()
	c := newCluster(t)
	c.apply("", append(readDir(t, "../../examples/policies"), api.Document{Name: "risk.yaml", Data: riskPolicy})...)
	n1 := c.addHost("node-1", "192.168.213.1")
	n2 := c.addHost("node-2", "192.168.213.2")
	n3 := c.addHost("node-3", "192.168.213.3")
	pg := map[string]int{"postgres": 5432}
	c.addWorkload(n1, "trading", "buy-signal", "10.213.1.10", map[string]string{"role": "buy-signal", "side": "buy"}, nil)
	c.addWorkload(n1, "payments", "processor", "10.213.1.20", map[string]string{"app": "payment-processor"}, map[string]int{"api": 9000})
	c.addWorkload(n2, "trading", "buy-db", "10.213.2.10", map[string]string{"role": "database", "side": "buy"}, pg)
	c.addWorkload(n2, "trading", "sell-signal", "10.213.2.20", map[string]string{"role": "sell-signal", "side": "sell"}, nil)
	c.addWorkload(n3, "trading", "sell-db", "10.213.3.10", map[string]string{"role": "database", "side": "sell"}, pg)
	c.addWorkload(n3, "trading", "risk", "10.213.3.20", map[string]string{"role": "risk"}, nil)
	c.addWorkload(n3, "web", "frontend", "10.213.3.30", map[string]string{"app": "frontend"}, map[string]int{"https": 443})
	c.converged(10 * time.Second)
	t.Logf("3 hosts, 7 workloads, converged in %s", time.Since(start).Round(time.Millisecond))

	// Cross-host policy, judged on both hosts.
	c.expect("allowed", true, "buy-signal", "buy-db", 5432)      // node-1 → node-2
	c.expect("allowed", true, "sell-signal", "sell-db", 5432)    // node-2 → node-3
	c.expect("allowed", true, "frontend", "processor", 9000)     // node-3 → node-1, a Kubernetes NetworkPolicy
	c.expect("wall", false, "buy-signal", "sell-db", 5432)       // node-1 → node-3
	c.expect("wall", false, "sell-signal", "buy-db", 5432)       // node-2, same host
	c.expect("ingress", false, "risk", "buy-db", 5432)           // node-3 allows, node-2 denies
	c.expect("default deny", false, "frontend", "sell-db", 5432) // node-3, egress
	c.expect("default deny", false, "processor", "buy-db", 5432) // node-1 egress
	for _, k := range []struct {
		h    *node
		rule string
	}{
		{n1, "/egress/to-databases"},      // buy-signal's egress, at the source
		{n2, "/ingress/from-buy-signal"},  // buy-db's ingress, at the destination
		{n1, "buy-sell"},                  // the wall, at the source
		{n3, "risk/egress/to-databases"},  // risk's egress allowed at the source…
		{n2, "/ingress/deny-all-ingress"}, // …and denied at the destination
	} {
		if got := c.counter(k.h, k.rule); got == 0 {
			t.Errorf("host %s: counter of %s is 0", k.h.name, k.rule)
		}
	}

	// node-3 is lost: its agent stops (its kernel keeps enforcing), and
	// the manager is unreachable for everyone for a while.
	c.stopAgent(n3)
	c.stopManager()
	// Wait until both have noticed and tried again in vain: a reconnect
	// refused, so that what follows runs with no manager to fall back on.
	for _, h := range []*node{n1, n2} {
		waitFor(t, 10*time.Second, func() bool {
			st := h.f.Status()
			return !st.Connected && strings.Contains(st.Error, "refused")
		})
	}
	c.expect("fail-static", true, "buy-signal", "buy-db", 5432)
	c.expect("fail-static", false, "buy-signal", "sell-db", 5432)
	c.expect("fail-static", true, "sell-signal", "sell-db", 5432)
	c.expect("fail-static", false, "risk", "buy-db", 5432)

	// The manager is back; two revisions while node-3 is away: buy-db
	// takes risk (node-2 enforces), sell-db's policy goes (node-3 must).
	c.startManager(c.addr)
	c.apply("", api.Document{Name: "buy-db.yaml", Data: buyDBWithRisk})
	del, err := c.admin.Delete(context.Background(), api.ManagerApplyRequest{Documents: []api.Document{{Name: "sell-db.yaml", Data: sellDBPolicy}},
		Wait: "2s"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(del.NotRealized, []string{"node-3"}) {
		t.Errorf("revision %d: not realized by %v, want [node-3]", del.Revision, del.NotRealized)
	}
	c.expect("changed while node-3 is away", true, "risk", "buy-db", 5432)
	c.expect("node-3 is stale", true, "sell-signal", "sell-db", 5432)

	// node-3 is back: it resumes and converges to the latest revision.
	t0 := time.Now()
	c.startAgent(n3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n3.f.WaitRealized(ctx, del.Revision); err != nil {
		t.Fatal(err)
	}
	t.Logf("node-3 back: realized revision %d in %s", del.Revision, time.Since(t0).Round(time.Millisecond))
	c.expect("converged", false, "sell-signal", "sell-db", 5432)
	c.expect("converged", true, "buy-signal", "buy-db", 5432)

	// A policy change realized by all three hosts.
	t0 = time.Now()
	res := c.apply("10s", api.Document{Name: "buy-db.yaml", Data: buyDBWithRisk + "      log: true\n"})
	if len(res.NotRealized) > 0 || len(res.Realized) != 3 {
		t.Errorf("revision %d: realized by %v, not by %v", res.Revision, res.Realized, res.NotRealized)
	}
	t.Logf("a policy change realized by all 3 hosts in %s", time.Since(t0).Round(time.Millisecond))
	hosts, err := c.admin.Hosts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts.Items {
		if h.Realized < res.Revision || h.Health != "ok" {
			t.Errorf("host %s: realized %d, health %q; want ≥ %d, ok", h.Name, h.Realized, h.Health, res.Revision)
		}
	}
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
}
