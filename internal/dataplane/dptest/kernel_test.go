package dptest

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// nopDataplane enforces nothing: the harness's self-test programs the
// host by hand.
type nopDataplane struct{}

func (nopDataplane) Apply(context.Context, dataplane.Desired) error { return nil }
func (nopDataplane) Counters(context.Context) (dataplane.Counters, error) {
	return dataplane.Counters{}, nil
}
func (nopDataplane) Close() error { return nil }

// The kernel harness tells connected, refused and dropped apart as the
// kernel shows them, with a hand-written nftables ruleset in the host
// namespace (the nft CLI is only a test tool here).
func TestKernelHarnessOutcomes(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireCommand(t, "nft")
	k := Kernel(t, func(string) (dataplane.Dataplane, error) { return nopDataplane{}, nil })
	h := k.NewKernelHost(t)
	ctx := context.Background()
	a := mustAddrs("10.79.0.1 fd79::1")
	b := mustAddrs("10.79.0.2 fd79::2")
	ifA, err := h.Attach(ctx, Endpoint{Name: "t/a", Addrs: a})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Attach(ctx, Endpoint{Name: "t/b", Addrs: b}); err != nil {
		t.Fatal(err)
	}
	if err := h.AddOutside(ctx, Endpoint{Name: "t/out", Addrs: mustAddrs("203.0.113.7")}); err != nil {
		t.Fatal(err)
	}
	ruleset := `
table inet t {
  chain forward {
    type filter hook forward priority 0; policy accept;
    ct state established,related accept
    iifname "` + ifA + `" ip saddr != 10.79.0.1 drop
    iifname "` + ifA + `" ip6 saddr != fd79::1 meta nfproto ipv6 drop
    tcp dport 81 reject with tcp reset
    tcp dport 82 drop
    udp dport 55 reject
    udp dport 54 drop
    ip daddr 10.79.0.2 icmp type echo-request reject
    ip6 daddr fd79::2 icmpv6 type echo-request drop
  }
}`
	cmd := exec.Command("ip", "netns", "exec", h.NS.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	for _, c := range []struct {
		to    string
		proto policy.Protocol
		port  int
		want  Outcome
	}{
		{"10.79.0.2", policy.TCP, 80, Connected},
		{"fd79::2", policy.TCP, 80, Connected},
		{"10.79.0.2", policy.TCP, 81, Refused},
		{"10.79.0.2", policy.TCP, 82, Dropped},
		{"10.79.0.2", policy.UDP, 53, Connected},
		{"fd79::2", policy.UDP, 53, Connected},
		{"10.79.0.2", policy.UDP, 55, Refused},
		{"fd79::2", policy.UDP, 55, Refused},
		{"10.79.0.2", policy.UDP, 54, Dropped},
		{"10.79.0.2", policy.ICMP, 0, Refused},
		{"fd79::2", policy.ICMPv6, 0, Dropped},
		{"203.0.113.7", policy.TCP, 443, Connected},
		{"203.0.113.7", policy.ICMP, 0, Connected},
	} {
		got, detail, err := h.Try(ctx, Try{From: "t/a", To: netip.MustParseAddr(c.to), Protocol: c.proto, Port: c.port})
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("a -> %s %v/%d: %s (%s), want %s", c.to, c.proto, c.port, got, detail, c.want)
		}
	}
	// b's ICMP echo to a passes (nothing blocks it).
	if got, detail, err := h.Try(ctx, Try{From: "t/b", To: a[1], Protocol: policy.ICMPv6}); err != nil || got != Connected {
		t.Errorf("b -> a icmpv6: %s (%s) %v", got, detail, err)
	}
	for _, c := range []struct {
		spoof, to string
		want      Outcome
	}{
		{"10.79.0.1", "10.79.0.2", Connected},
		{"10.79.0.9", "10.79.0.2", Dropped},
		{"fd79::9", "fd79::2", Dropped},
	} {
		got, detail, err := h.Try(ctx, Try{From: "t/a", To: netip.MustParseAddr(c.to), Protocol: policy.UDP, Port: 53,
			Spoof: netip.MustParseAddr(c.spoof)})
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("a spoofing %s -> %s: %s (%s), want %s", c.spoof, c.to, got, detail, c.want)
		}
	}
	conn, err := h.Open(ctx, Try{From: "t/b", To: a[0], Protocol: policy.TCP, Port: 82})
	if err == nil {
		t.Errorf("open through a drop rule passed")
		conn.Close()
	}
	conn, err = h.Open(ctx, Try{From: "t/b", To: a[0], Protocol: policy.TCP, Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if o, err := conn.Exchange(ctx); err != nil || o != Connected {
		t.Errorf("exchange on an open connection: %s %v", o, err)
	}
	if err := h.Supports(policy.SCTP); err != nil {
		t.Logf("SCTP: %v", err)
	}
}

func mustAddrs(s string) []netip.Addr {
	var out []netip.Addr
	for _, f := range strings.Fields(s) {
		out = append(out, netip.MustParseAddr(f))
	}
	return out
}
