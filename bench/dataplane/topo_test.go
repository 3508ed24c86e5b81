package benchdataplane

import (
	"net/netip"
	"os"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// Every namespace this package creates is named with one of these
// prefixes, one per test, so that a test removing its leftovers at start
// never touches a run of the other one. BULKHEAD_BENCH_PREFIX (at most 5
// characters) replaces them, for a run beside another's on one machine.
var (
	figuresPrefix = benchPrefix("bhbnf", "f")
	smokePrefix   = benchPrefix("bhbnk", "k")
)

func benchPrefix(def, suffix string) string {
	if p := os.Getenv("BULKHEAD_BENCH_PREFIX"); p != "" {
		return p + suffix
	}
	return def
}

// topo is one throwaway host namespace with two workload namespaces
// attached by routed veths: client (ClientAddr) and server (ServerAddr).
// Every configuration gets its own topo, built once, so that the rounds
// switch between configurations without reloading any rules.
type topo struct {
	name                 string
	host, client, server *netns.NS
	clientIf, serverIf   string // host-side interfaces
	srv                  *server
}

func newTopo(t *testing.T, prefix, name string) *topo {
	t.Helper()
	tp := &topo{name: name, host: nstest.NS(t, prefix+"h"), client: nstest.NS(t, prefix+"c"), server: nstest.NS(t, prefix+"s")}
	tp.clientIf, tp.serverIf = attach.HostIfName(tp.client.Name), attach.HostIfName(tp.server.Name)
	for _, a := range []struct {
		ns     *netns.NS
		hostIf string
		addr   netip.Addr
	}{{tp.client, tp.clientIf, ClientAddr}, {tp.server, tp.serverIf, ServerAddr}} {
		err := tp.host.Do(func() error {
			_, err := attach.Add(attach.Spec{HostIf: a.hostIf, NetNS: a.ns.Path(), IfName: "eth0", Addrs: []netip.Addr{a.addr}})
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	// The client opens tens of thousands of connections a second: allow
	// reusing TIME_WAIT ports and use the widest ephemeral range. The
	// client also closes with SO_LINGER 0 (see crrClient), so normally no
	// TIME_WAIT is left at all.
	err := tp.client.Do(func() error {
		if err := netns.Sysctl("net/ipv4/tcp_tw_reuse", "1"); err != nil {
			return err
		}
		return netns.Sysctl("net/ipv4/ip_local_port_range", "1024 65535")
	})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	srv, err := startServer(tp.server, netip.AddrPortFrom(ServerAddr, ServerPort))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(srv.Close)
	tp.srv = srv
	return tp
}
