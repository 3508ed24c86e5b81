package manager_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
)

// policySet writes n policies of rules rules each, with a baseline deny
// and segments (and, with wall, a wall between them that holds).
func policySet(n, rules int, wall bool) string {
	var b strings.Builder
	if wall {
		b.WriteString("apiVersion: bulkhead.dev/v1\nkind: Wall\nmetadata: {name: left-right}\nspec: {segments: [left, right]}\n---\n")
	}
	b.WriteString(`apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: left}
spec: {namespaces: [left], selector: {}}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: right}
spec: {namespaces: [right], selector: {}}
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: default-deny}
spec:
  tier: baseline
  appliesTo: {selector: {}}
  ingress: [{name: deny, action: deny}]
  egress: [{name: deny, action: deny}]
`)
	for i := range n {
		fmt.Fprintf(&b, "---\napiVersion: bulkhead.dev/v1\nkind: Policy\nmetadata: {name: p%d, namespace: app%d}\nspec:\n  appliesTo: {selector: {matchLabels: {app: a%d}}}\n  ingress:\n", i, i%50, i)
		for r := range rules {
			fmt.Fprintf(&b, "    - {name: r%d, action: allow, from: [{selector: {matchLabels: {app: c%d}}}], services: [{protocol: tcp, port: %d}]}\n", r, r, 1000+r)
		}
	}
	return b.String()
}

// TestScaleFigures measures an apply of a 10,000-rule set and how fast a
// change reaches many watchers over real connections. BULKHEAD_LONG=1.
func TestScaleFigures(t *testing.T) {
	if os.Getenv("BULKHEAD_LONG") == "" {
		t.Skip("set BULKHEAD_LONG=1 for the manager's scale figures")
	}
	e := start(t)
	// With a wall, policy.ProveWalls dominates: measure both.
	small := policySet(100, 10, true)
	startApply := time.Now()
	if _, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("small.yaml", small)}); err != nil {
		t.Fatal(err)
	}
	t.Logf("apply of 100 policies × 10 rules with a wall to prove: %s", time.Since(startApply))
	if _, err := e.admin.Delete(ctx(t), api.ManagerApplyRequest{Documents: doc("small.yaml", small)}); err != nil {
		t.Fatal(err)
	}
	set := policySet(1000, 10, false)
	startApply = time.Now()
	res, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("set.yaml", set)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("apply of 1,000 policies × 10 rules (%d KiB), no wall: %s, revision %d", len(set)>>10, time.Since(startApply), res.Revision)
	startApply = time.Now()
	res2, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("set.yaml", strings.Replace(set, "port: 1000}", "port: 999}", 1))})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("apply of the same set with one rule changed: %s (%d updated)", time.Since(startApply), len(res2.Updated))

	const watchers = 200
	agent, _ := e.join("node-1")
	var wg sync.WaitGroup
	got := make([]chan time.Time, watchers)
	ready := make(chan struct{}, watchers)
	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range watchers {
		got[i] = make(chan time.Time, 10)
		// A client each: its own connection, as an agent has.
		c, err := client.New(client.Config{URL: e.m.URL(), CA: e.m.CAPEM(), Token: e.m.AdminToken()})
		if err != nil {
			t.Fatal(err)
		}
		_ = agent
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := true
			c.Watch(wctx, res2.Revision+1, func(ev api.FeedEvent) error {
				if ev.Type == api.FeedHeartbeat && first {
					first = false
					ready <- struct{}{}
				}
				if ev.Type == api.FeedRev {
					got[i] <- time.Now()
				}
				return nil
			})
		}()
	}
	for range watchers {
		<-ready
	}
	var lat []time.Duration
	for round := range 5 {
		t0 := time.Now()
		seg := fmt.Sprintf("apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: extra}\nspec: {cidrs: [{cidr: 192.0.2.%d/32}]}\n", round)
		if _, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("extra.yaml", seg)}); err != nil {
			t.Fatal(err)
		}
		committed := time.Since(t0)
		for i := range watchers {
			select {
			case at := <-got[i]:
				lat = append(lat, at.Sub(t0))
			case <-time.After(10 * time.Second):
				t.Fatalf("watcher %d did not see the change", i)
			}
		}
		t.Logf("round %d: apply answered in %s", round, committed)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("change → %d watchers (real TLS connections): p50 %s, p99 %s, max %s", watchers,
		lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
	cancel()
	wg.Wait()
}
