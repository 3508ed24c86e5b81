package manager_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
)

// alive makes host count as live (it reported its status).
func alive(t *testing.T, c *client.Client, host string) {
	t.Helper()
	if err := c.ReportStatus(ctx(t), host, api.HostStatus{Health: "ok"}); err != nil {
		t.Fatal(err)
	}
}

func workloadCount(t *testing.T, c *client.Client) int {
	t.Helper()
	wl, err := c.Workloads(ctx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	return len(wl.Items)
}

func refusals(t *testing.T, admin *client.Client, host string) int {
	t.Helper()
	list, err := admin.Audit(ctx(t), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range list.Items {
		if e.Action == "workloads.refused" && e.Object == "host/"+host {
			n++
		}
	}
	return n
}

// The attack of issue 9, "A host may speak only for itself": with its
// own certificate a host may claim neither another host's names,
// addresses, ranges or underlay address, nor special-purpose addresses,
// nor namespaces an admin has not allowed it; an operator's delete does
// not free a live host's address; each refusal is audited.
func TestHostSpeaksOnlyForItself(t *testing.T) {
	e := start(t)
	a1, _ := e.join("node-1")
	a2, _ := e.join("node-2")
	for host, b := range map[string]api.HostBounds{
		"node-1": {Ranges: []string{"10.1.0.0/24"}, HostIPs: []string{"192.0.2.1/32"}, Namespaces: []string{"payments", "trading"}},
		"node-2": {Ranges: []string{"10.2.0.0/24"}, Namespaces: []string{"trading"}},
	} {
		if _, err := e.admin.SetHostBounds(ctx(t), host, b); err != nil {
			t.Fatal(err)
		}
	}
	db := map[string]string{"app": "cards-db"}
	if _, err := a1.ReportWorkloads(ctx(t), "node-1", []api.HostWorkload{
		{Namespace: "payments", Name: "cards-db", Labels: db, IPs: []string{"10.1.0.2"}, HostIP: "192.0.2.1"},
		{Namespace: "trading", Name: "buy-db", IPs: []string{"10.1.0.3"}, HostIP: "192.0.2.1"},
	}, nil, true); err != nil {
		t.Fatal(err)
	}
	before := workloadCount(t, e.admin)
	for _, c := range []struct {
		name string
		wl   api.HostWorkload
		want string
	}{
		{"another namespace's identity", api.HostWorkload{Namespace: "payments", Name: "cards-db-2", Labels: db, IPs: []string{"10.2.0.9"}},
			`workloads[0].namespace: host node-2 may not run workloads in namespace "payments"`},
		{"another host's name", api.HostWorkload{Namespace: "trading", Name: "buy-db", IPs: []string{"10.2.0.5"}},
			"workloads[0].name: workload trading/buy-db is host node-1's"},
		{"another host's underlay address", api.HostWorkload{Namespace: "trading", Name: "x", IPs: []string{"10.2.0.5"}, HostIP: "192.0.2.1"},
			"workloads[0].hostIP: 192.0.2.1: host node-1's underlay address"},
		{"another host's range", api.HostWorkload{Namespace: "trading", Name: "x", IPs: []string{"10.1.0.7"}},
			"workloads[0].ips[0]: 10.1.0.7: outside host node-2's ranges 10.2.0.0/24"},
		{"another host's address", api.HostWorkload{Namespace: "trading", Name: "x", IPs: []string{"10.1.0.2"}},
			"10.1.0.2: outside host node-2's ranges"},
	} {
		_, err := a2.ReportWorkloads(ctx(t), "node-2", []api.HostWorkload{c.wl}, nil, false)
		if status(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want 422 saying %q", c.name, err, c.want)
		}
	}
	// Special-purpose addresses, on a host with no ranges set (trust).
	a3, _ := e.join("node-3")
	for _, ip := range []string{"169.254.1.1", "0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1", "::", "::1", "fe80::1", "0.1.2.3", "240.0.0.1", "::ffff:127.0.0.1"} {
		_, err := a3.ReportWorkloads(ctx(t), "node-3", []api.HostWorkload{{Namespace: "shop", Name: "x", IPs: []string{ip}}}, nil, true)
		if status(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), "which no workload may have") {
			t.Errorf("address %s: %v, want 422", ip, err)
		}
	}
	// An address inside another host's ranges, from a host without ranges.
	_, err := a3.ReportWorkloads(ctx(t), "node-3", []api.HostWorkload{{Namespace: "shop", Name: "x", IPs: []string{"10.2.0.77"}}}, nil, true)
	wantStatus(t, err, http.StatusUnprocessableEntity, "inside host node-2's ranges")
	if got := workloadCount(t, e.admin); got != before {
		t.Errorf("%d workloads after the refused reports, want %d", got, before)
	}
	// Ranges may not overlap another host's, nor hold its workloads.
	_, err = e.admin.SetHostBounds(ctx(t), "node-3", api.HostBounds{Ranges: []string{"10.1.0.0/16"}})
	wantStatus(t, err, http.StatusUnprocessableEntity, "overlaps host node-1's range 10.1.0.0/24")
	_, err = e.admin.SetHostBounds(ctx(t), "node-1", api.HostBounds{Ranges: []string{"10.1.0.0/24"}, Namespaces: []string{"trading"}})
	wantStatus(t, err, http.StatusUnprocessableEntity, "workload payments/cards-db of host node-1 runs in namespace payments")
	if _, err := a3.SetHostBounds(ctx(t), "node-3", api.HostBounds{}); status(err) != http.StatusForbidden {
		t.Errorf("a host set its own bounds: %v, want 403", err)
	}

	// An operator deletes a live host's record: its address stays the
	// host's until the host's own report releases it.
	if _, err := a3.ReportWorkloads(ctx(t), "node-3", []api.HostWorkload{{Namespace: "shop", Name: "web", IPs: []string{"10.3.0.1"}}}, nil, true); err != nil {
		t.Fatal(err)
	}
	alive(t, a3, "node-3")
	if err := e.admin.DeleteWorkload(ctx(t), "node-3", "shop", "web"); err != nil {
		t.Fatal(err)
	}
	a4, _ := e.join("node-4")
	_, err = a4.ReportWorkloads(ctx(t), "node-4", []api.HostWorkload{{Namespace: "shop", Name: "web-2", IPs: []string{"10.3.0.1"}}}, nil, true)
	wantStatus(t, err, http.StatusUnprocessableEntity, "held for host node-3")
	if b, err := e.admin.HostBounds(ctx(t), "node-3"); err != nil || strings.Join(b.Held, ",") != "10.3.0.1" {
		t.Errorf("node-3's bounds: %+v, %v; want 10.3.0.1 held", b, err)
	}
	if _, err := a3.ReportWorkloads(ctx(t), "node-3", nil, nil, true); err != nil {
		t.Fatal(err)
	}
	if _, err := a4.ReportWorkloads(ctx(t), "node-4", []api.HostWorkload{{Namespace: "shop", Name: "web-2", IPs: []string{"10.3.0.1"}}}, nil, true); err != nil {
		t.Errorf("after node-3 released 10.3.0.1: %v", err)
	}

	// Each refusal is audited (at most one entry per host per 10 s).
	for _, host := range []string{"node-2", "node-3", "node-4"} {
		if n := refusals(t, e.admin, host); n != 1 {
			t.Errorf("host %s: %d audited refusals, want 1", host, n)
		}
	}
}

// Records the manager accepted and every agent refused (issue 8): the
// manager now validates a report with the agents' own validator.
func TestReportsAreValidatedAsAgentsDo(t *testing.T) {
	e := start(t)
	a1, _ := e.join("node-1")
	long := strings.Repeat("v", 64)
	for _, c := range []struct {
		name string
		ws   []api.HostWorkload
		want string
	}{
		{"one address twice", []api.HostWorkload{
			{Namespace: "shop", Name: "a", IPs: []string{"10.0.0.1"}},
			{Namespace: "shop", Name: "b", IPs: []string{"10.0.0.1"}}}, "workloads[1].ips[0]"},
		{"label key with a space", []api.HostWorkload{{Namespace: "shop", Name: "a", IPs: []string{"10.0.0.1"}, Labels: map[string]string{"a b": "x"}}}, "workloads[0].labels.a b"},
		{"label key with a colon", []api.HostWorkload{{Namespace: "shop", Name: "a", IPs: []string{"10.0.0.1"}, Labels: map[string]string{"a:b": "x"}}}, "workloads[0].labels.a:b"},
		{"label value over 63", []api.HostWorkload{{Namespace: "shop", Name: "a", IPs: []string{"10.0.0.1"}, Labels: map[string]string{"a": long}}}, "invalid label value"},
		{"upper-case port name", []api.HostWorkload{{Namespace: "shop", Name: "a", IPs: []string{"10.0.0.1"}, Ports: []api.NamedPort{{Name: "Postgres", Port: 5432}}}}, "workloads[0].ports[0].name"},
		{"over-long port name", []api.HostWorkload{{Namespace: "shop", Name: "a", IPs: []string{"10.0.0.1"}, Ports: []api.NamedPort{{Name: "a-very-long-port-name", Port: 5432}}}}, "workloads[0].ports[0].name"},
		{"zoned IPv6", []api.HostWorkload{{Namespace: "shop", Name: "a", IPs: []string{"2001:db8::1%eth0"}}}, "workloads[0].ips[0]"},
		{"port 65536", []api.HostWorkload{{Namespace: "shop", Name: "a", IPs: []string{"10.0.0.1"}, Ports: []api.NamedPort{{Name: "p", Port: 65536}}}}, "workloads[0].ports[0].port"},
	} {
		_, err := a1.ReportWorkloads(ctx(t), "node-1", c.ws, nil, true)
		if status(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want 422 naming %s", c.name, err, c.want)
		}
	}
	// On POST, a new workload may not take an address this host's other
	// workload keeps.
	if _, err := a1.ReportWorkloads(ctx(t), "node-1", []api.HostWorkload{{Namespace: "shop", Name: "a", IPs: []string{"10.0.0.1"}}}, nil, true); err != nil {
		t.Fatal(err)
	}
	_, err := a1.ReportWorkloads(ctx(t), "node-1", []api.HostWorkload{{Namespace: "shop", Name: "b", IPs: []string{"10.0.0.1"}}}, nil, false)
	wantStatus(t, err, http.StatusUnprocessableEntity, "already belongs to shop/a on this host")
	_, err = a1.ReportWorkloads(ctx(t), "node-1", nil, []string{"shop/a/b"}, false)
	wantStatus(t, err, http.StatusUnprocessableEntity, `deleted[0]: "shop/a/b": want namespace/name`)
	if got := workloadCount(t, e.admin); got != 1 {
		t.Errorf("%d workloads stored, want 1", got)
	}
}

// One oversized report (200k labels) gets a clear 4xx, and the host's
// next report is taken.
func TestOversizedReport(t *testing.T) {
	e := start(t)
	a1, _ := e.join("node-1")
	labels := make(map[string]string, 200000)
	for i := range 200000 {
		labels[fmt.Sprintf("k%d", i)] = "v"
	}
	_, err := a1.ReportWorkloads(ctx(t), "node-1", []api.HostWorkload{{Namespace: "shop", Name: "a", IPs: []string{"10.0.0.1"}, Labels: labels}}, nil, true)
	wantStatus(t, err, http.StatusUnprocessableEntity, "too many labels: 200000; at most 64")
	if _, err := a1.ReportWorkloads(ctx(t), "node-1", []api.HostWorkload{{Namespace: "shop", Name: "a", IPs: []string{"10.0.0.1"}}}, nil, true); err != nil {
		t.Fatalf("the next report: %v", err)
	}
	many := make([]api.HostWorkload, 10001)
	for i := range many {
		many[i] = api.HostWorkload{Namespace: "shop", Name: fmt.Sprintf("w%d", i), IPs: []string{fmt.Sprintf("10.1.%d.%d", i/250, i%250+1)}}
	}
	_, err = a1.ReportWorkloads(ctx(t), "node-1", many, nil, true)
	wantStatus(t, err, http.StatusRequestEntityTooLarge, "at most 10000 workloads")
}
