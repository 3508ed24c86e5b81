package dptest

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
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
	requireNftCLI(t)
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

// rulesetDataplane is a stand-in kernel dataplane for the harness's own
// tests: anti-spoofing from the attachments, then a fixed, hand-written
// policy, applied in one nft transaction.
type rulesetDataplane struct {
	ns     string // namespace name
	policy string // rules of the forward chain
}

const fakeTable = "dptestfake"

func (r *rulesetDataplane) Apply(ctx context.Context, d dataplane.Desired) error {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %[1]s\ndelete table inet %[1]s\ntable inet %[1]s {\n counter spoofed {}\n chain forward {\n", fakeTable)
	b.WriteString("  type filter hook forward priority 0; policy drop;\n  ct state established,related accept\n")
	for _, a := range d.Attachments {
		var v4, v6 []string
		for _, ip := range a.Addrs {
			if ip.Is4() {
				v4 = append(v4, ip.String())
			} else {
				v6 = append(v6, ip.String())
			}
		}
		for _, fam := range []struct {
			name  string
			addrs []string
		}{{"ip", v4}, {"ip6", v6}} {
			if len(fam.addrs) > 0 {
				fmt.Fprintf(&b, "  iifname %q %s saddr != { %s } counter name spoofed drop\n", a.Interface, fam.name, strings.Join(fam.addrs, ", "))
			} else {
				fmt.Fprintf(&b, "  iifname %q meta nfproto %s counter name spoofed drop\n", a.Interface, map[string]string{"ip": "ipv4", "ip6": "ipv6"}[fam.name])
			}
		}
	}
	b.WriteString(r.policy + "\n }\n}\n")
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", r.ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s\n%s", err, out, b.String())
	}
	return nil
}

var packetsRE = regexp.MustCompile(`packets (\d+)`)

func (r *rulesetDataplane) Counters(ctx context.Context) (dataplane.Counters, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", r.ns, "nft", "list", "counter", "inet", fakeTable, "spoofed").CombinedOutput()
	if err != nil {
		return dataplane.Counters{}, fmt.Errorf("nft: %v: %s", err, out)
	}
	m := packetsRE.FindSubmatch(out)
	if m == nil {
		return dataplane.Counters{}, fmt.Errorf("nft: no packets in %s", out)
	}
	n, _ := strconv.ParseUint(string(m[1]), 10, 64)
	return dataplane.Counters{Spoofed: dataplane.Counter{Packets: n}}, nil
}

func (r *rulesetDataplane) Close() error { return nil }

// The attack tests' own logic, against the stand-in ruleset written for
// their world (the real dataplane runs them in internal/dataplane/nft).
func TestAttacksAgainstAHandWrittenRuleset(t *testing.T) {
	nstest.RequireRoot(t)
	requireNftCLI(t)
	var rules []string
	for _, r := range []string{
		"%s daddr %s2 tcp dport 5432 accept",
		"%s daddr %s2 udp dport 53 accept",
		"%s daddr %s3 tcp dport 80 accept",
		"%s saddr %[2]s3 %[1]s daddr %[2]s4 tcp dport 6379 accept",
	} {
		rules = append(rules, "  "+fmt.Sprintf(r, "ip", "10.81.0."), "  "+fmt.Sprintf(r, "ip6", "fd81::"))
	}
	k := Kernel(t, func(path string) (dataplane.Dataplane, error) {
		return &rulesetDataplane{ns: filepath.Base(path), policy: strings.Join(rules, "\n")}, nil
	})
	Attacks(t, k)
}

// requireNftCLI needs Debian's nft (make test installs it): these
// self-tests write their stand-in rulesets with it, and the same harness
// code runs on the real dataplane in internal/dataplane/nft without it.
func requireNftCLI(t *testing.T) {
	nstest.RequireCommand(t, "nft") // Debian's nftables; make test installs it
}
