package inventory_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/inventory"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func wl(host, name string, ips ...string) *api.HostWorkload {
	return &api.HostWorkload{Host: host, Namespace: "bhm2", Name: name, IPs: ips, HostIP: "192.0.2.1",
		Labels: map[string]string{"app": name}, Ports: []api.NamedPort{{Name: "http", Port: 80, Protocol: "TCP"}}}
}

func key(w *api.HostWorkload) string {
	return "feed/workloads/" + w.Host + "/" + w.Namespace + "/" + w.Name
}

// TestIndexesFollowChanges: a workload put is found by address (mapped
// or not), by name, by host and by underlay address; changed, its old
// address is free; deleted, it is nowhere.
func TestIndexesFollowChanges(t *testing.T) {
	var inv inventory.Inventory
	web := wl("h1", "web", "10.0.0.1")
	inv.Change(key(web), nil, web)
	inv.Change(key(wl("h1", "db", "10.0.0.2")), nil, wl("h1", "db", "10.0.0.2"))

	if o := inv.Owner(netip.MustParseAddr("::ffff:10.0.0.1")); o != web {
		t.Errorf("Owner(10.0.0.1, mapped) = %v, want web", o)
	}
	if o := inv.ByName("bhm2/web"); o != web {
		t.Errorf("ByName = %v, want web", o)
	}
	if n := inv.HostCounts()["h1"]; n != 2 {
		t.Errorf("h1 has %d workloads, want 2", n)
	}
	if h := inv.HostIPOwner(netip.MustParseAddr("192.0.2.1"), "h2"); h != "h1" {
		t.Errorf("HostIPOwner = %q, want h1", h)
	}
	if h := inv.HostIPOwner(netip.MustParseAddr("192.0.2.1"), "h1"); h != "" {
		t.Errorf("HostIPOwner except h1 = %q, want none", h)
	}

	moved := wl("h1", "web", "10.0.0.9")
	inv.Change(key(web), web, moved)
	if o := inv.Owner(netip.MustParseAddr("10.0.0.1")); o != nil {
		t.Errorf("the old address still belongs to %v", o)
	}
	if o := inv.Owner(netip.MustParseAddr("10.0.0.9")); o != moved {
		t.Errorf("the new address belongs to %v, want web", o)
	}
	inv.Change(key(moved), moved, nil)
	if inv.ByName("bhm2/web") != nil || inv.Owner(netip.MustParseAddr("10.0.0.9")) != nil || inv.HostCounts()["h1"] != 1 {
		t.Errorf("a deleted workload is still indexed: %v", inv.HostCounts())
	}
	inv.Reset()
	if len(inv.HostCounts()) != 0 || inv.HostIPOwner(netip.MustParseAddr("192.0.2.1"), "") != "" {
		t.Error("Reset left workloads")
	}
}

// TestWorkloadsLeaveOutClashes: the model's list leaves out a workload
// whose name or address another holds, the first by host name staying;
// it is built once per change and shared.
func TestWorkloadsLeaveOutClashes(t *testing.T) {
	var inv inventory.Inventory
	for _, w := range []*api.HostWorkload{wl("h2", "web", "10.0.0.1"), wl("h1", "web", "10.0.0.5"),
		wl("h1", "db", "10.0.0.2"), wl("h3", "cache", "10.0.0.2"), wl("h3", "log", "10.0.0.3")} {
		inv.Change(key(w), nil, w)
	}
	got := inv.Workloads(quiet)
	var names []string
	for _, w := range got {
		names = append(names, w.Host+"/"+w.Name)
	}
	if want := "[h1/db h1/web h3/log]"; fmt.Sprint(names) != want {
		t.Errorf("workloads %v, want %s", names, want)
	}
	if w := got[0]; len(w.IPs) != 1 || w.IPs[0] != netip.MustParseAddr("10.0.0.2") || len(w.Ports) != 1 || w.Ports[0].Port != 80 {
		t.Errorf("model of h1/db: %+v", w)
	}
	if again := inv.Workloads(quiet); &again[0] != &got[0] {
		t.Error("the list was built again without a change")
	}
	inv.Change(key(wl("h3", "log", "10.0.0.3")), wl("h3", "log", "10.0.0.3"), nil)
	if again := inv.Workloads(quiet); len(again) != 2 {
		t.Errorf("after a delete: %d workloads, want 2", len(again))
	}
}
