package e2e

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent/feed"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
)

// A managed agent with the nft dataplane collects its host's flows and
// the manager answers them: an allowed connection and a denied one
// between workloads appear in GET /v1/flows with the rules that decided.
func TestFlowsReachTheManager(t *testing.T) {
	c := newClusterNamed(t, "bhfs")
	c.apply("", append(readDir(t, "../../examples/policies"), api.Document{Name: "risk.yaml", Data: riskPolicy})...)
	h := c.addHost("node-1", "192.168.214.1")
	// A closed connection's entry goes at once, not after TIME_WAIT's 120 s.
	nstest.Run(t, h.ns, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1")
	col, err := feed.StartFlows(feed.FlowOptions{Agent: h.a, URL: c.url(), Dir: filepath.Join(h.dir, "manager"),
		NetNS: h.ns.Path(), Logger: c.log})
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	pg := map[string]int{"postgres": 5432}
	c.addWorkload(h, "trading", "buy-signal", "10.214.1.10", map[string]string{"role": "buy-signal", "side": "buy"}, nil)
	c.addWorkload(h, "trading", "buy-db", "10.214.1.20", map[string]string{"role": "database", "side": "buy"}, pg)
	c.addWorkload(h, "trading", "risk", "10.214.1.30", map[string]string{"role": "risk"}, nil)
	since := time.Now().Add(-time.Minute)
	c.expect("allowed", true, "buy-signal", "buy-db", 5432)
	c.expect("denied", false, "risk", "buy-db", 5432)

	var allowed, denied *api.Flow
	waitFor(t, 30*time.Second, func() bool {
		// A listing removes expired entries now (their DESTROY events
		// follow), where conntrack's collector may take a minute.
		sweep(t, h.ns.Path())
		list, err := c.admin.Flows(context.Background(), url.Values{"workload": {"buy-db"}, "since": {since.Format(time.RFC3339)}})
		if err != nil {
			t.Fatal(err)
		}
		for i, f := range list.Flows {
			switch {
			case f.Src.Workload == "buy-signal" && f.Verdict == "allow":
				allowed = &list.Flows[i]
			case f.Src.Workload == "risk" && f.Verdict == "deny":
				denied = &list.Flows[i]
			}
		}
		return allowed != nil && denied != nil
	})
	if !strings.HasSuffix(allowed.Rule, "/ingress/from-buy-signal") || allowed.Host != "node-1" || allowed.Dst.Port != 5432 ||
		allowed.Orig.Packets == 0 || allowed.Reply.Packets == 0 {
		t.Errorf("allowed flow: %+v, want buy-db's rule from-buy-signal, node-1, packets both ways", *allowed)
	}
	if !strings.HasSuffix(denied.Rule, "/ingress/deny-all-ingress") || denied.Dst.Workload != "buy-db" {
		t.Errorf("denied flow: %+v, want the rule deny-all-ingress", *denied)
	}
	n, err := c.admin.FlowCounts(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n.Rules[allowed.Rule].Flows == 0 || n.Rules[denied.Rule].Flows == 0 {
		t.Errorf("rule hits %v, want both rules hit", n.Rules)
	}
	t.Logf("allowed: %s %s→%s rule %s; denied: rule %s; %d flows stored", allowed.Verdict, allowed.Src.Workload,
		allowed.Dst.Workload, allowed.Rule, denied.Rule, n.Stored)
}

// sweep lists the conntrack table of the namespace at path, which makes
// the kernel remove the entries that expired (and send their DESTROY
// events) now.
func sweep(t *testing.T, path string) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := conntrack.Dial(&netlink.Config{NetNS: int(f.Fd())})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Dump(nil); err != nil {
		t.Fatal(err)
	}
}
