package feed

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// Routes makes, changes and sweeps its own routes in a host namespace
// and leaves every other route alone.
func TestRoutes(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.NS(t, "bhupr")
	nstest.Run(t, ns, "ip", "link", "add", "under0", "type", "veth", "peer", "name", "under1")
	nstest.Run(t, ns, "ip", "link", "set", "under1", "up")
	nstest.Run(t, ns, "ip", "addr", "add", "192.0.2.1/24", "dev", "under0")
	nstest.Run(t, ns, "ip", "link", "set", "under0", "up")
	nstest.Run(t, ns, "ip", "route", "add", "10.9.0.99/32", "via", "192.0.2.9", "proto", "static")

	r := NewRoutes(ns.Path(), nil)
	a1, a2 := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.9.0.2")
	h2, h3 := netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	if err := r.Sync(map[netip.Addr]netip.Addr{a1: h2, a2: h2}); err != nil {
		t.Fatal(err)
	}
	out := nstest.Run(t, ns, "ip", "route", "show", "proto", "98")
	for _, want := range []string{"10.9.0.1 via 192.0.2.2", "10.9.0.2 via 192.0.2.2"} {
		if !strings.Contains(out, want) {
			t.Errorf("routes:\n%s\nwant %q", out, want)
		}
	}
	// a2 moves to host 3; a1 goes; an unreachable next hop is reported.
	err := r.Sync(map[netip.Addr]netip.Addr{a2: h3, netip.MustParseAddr("10.9.0.3"): netip.MustParseAddr("198.51.100.7")})
	if err == nil {
		t.Error("a route via an address on no link was not reported")
	}
	out = nstest.Run(t, ns, "ip", "route", "show", "proto", "98")
	if strings.TrimSpace(out) != "10.9.0.2 via 192.0.2.3 dev under0" {
		t.Errorf("routes after the change:\n%s", out)
	}
	if err := r.Sync(nil); err != nil {
		t.Fatal(err)
	}
	if out := nstest.Run(t, ns, "ip", "route", "show", "proto", "98"); strings.TrimSpace(out) != "" {
		t.Errorf("routes left after sweeping:\n%s", out)
	}
	if out := nstest.Run(t, ns, "ip", "route", "show", "10.9.0.99"); !strings.Contains(out, "via 192.0.2.9") {
		t.Errorf("another's route was touched: %q", out)
	}
}
