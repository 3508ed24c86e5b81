package attach

import (
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

func TestHostIfName(t *testing.T) {
	a, b := HostIfName("c1/eth0"), HostIfName("c2/eth0")
	if a == b || len(a) != 14 || !strings.HasPrefix(a, "bh") || a != HostIfName("c1/eth0") {
		t.Fatalf("names %q %q: want stable, distinct, 14 characters", a, b)
	}
}

func TestValidate(t *testing.T) {
	for _, s := range []Spec{
		{HostIf: "x", NetNS: "/n", IfName: "eth0", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}},
		{HostIf: "bh1", IfName: "eth0", Addrs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}},
		{HostIf: "bh1", NetNS: "/n", IfName: "eth0"},
		{HostIf: "bh1", NetNS: "/n", IfName: "eth0", Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}},
	} {
		if _, err := Add(s); err == nil || !strings.HasPrefix(err.Error(), "attach: ") {
			t.Errorf("Add(%+v) = %v, want a clear error", s, err)
		}
	}
}

// Two workloads attached to a throwaway host reach each other over the
// host's routes, in IPv4 and IPv6, and Del removes everything.
func TestAttachRouted(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireCommand(t, "ping")
	host := nstest.NS(t, "bhat-h")
	a, b := nstest.NS(t, "bhat-a"), nstest.NS(t, "bhat-b")
	specs := []Spec{
		{HostIf: HostIfName(a.Name), NetNS: a.Path(), IfName: "eth0",
			Addrs: []netip.Addr{netip.MustParseAddr("10.91.0.1"), netip.MustParseAddr("fd91::1")}},
		{HostIf: HostIfName(b.Name), NetNS: b.Path(), IfName: "eth0",
			Addrs: []netip.Addr{netip.MustParseAddr("10.91.0.2"), netip.MustParseAddr("fd91::2")}},
	}
	err := host.Do(func() error {
		for _, s := range specs {
			if _, err := Add(s); err != nil {
				return err
			}
			if err := Check(s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{"10.91.0.2", "fd91::2"} {
		if out, err := exec.Command("ip", "netns", "exec", a.Name, "ping", "-c1", "-W2", dst).CombinedOutput(); err != nil {
			t.Fatalf("ping %s from a: %v\n%s", dst, err, out)
		}
	}
	err = host.Do(func() error {
		for _, s := range specs {
			if err := Del(s.HostIf); err != nil {
				return err
			}
			if err := Del(s.HostIf); err != nil { // idempotent
				return err
			}
			if err := Check(s); err == nil {
				t.Errorf("Check after Del passed")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A host namespace made by `ip netns add` has lo down; TCP between its
// workloads must still work (the kernel would otherwise send them
// broadcast frames, which TCP drops).
func TestAttachHostWithLoopbackDown(t *testing.T) {
	nstest.RequireRoot(t)
	host, err := netns.Create(nstest.Name("bhat-h")) // lo never up, as `ip netns add` leaves it
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Delete() })
	a, b := nstest.NS(t, "bhat-a"), nstest.NS(t, "bhat-b")
	addrs := []netip.Addr{netip.MustParseAddr("10.92.0.1"), netip.MustParseAddr("10.92.0.2")}
	err = host.Do(func() error {
		for i, n := range []*netns.NS{a, b} {
			if _, err := Add(Spec{HostIf: HostIfName(n.Name), NetNS: n.Path(), IfName: "eth0", Addrs: addrs[i : i+1]}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var ln net.Listener
	if err := b.Do(func() (err error) { ln, err = net.Listen("tcp4", "10.92.0.2:0"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	err = a.Do(func() error {
		c, err := net.DialTimeout("tcp4", ln.Addr().String(), 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		t.Fatalf("tcp from a to b through a host with lo down: %v", err)
	}
}
