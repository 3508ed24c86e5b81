package nft

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// cliPolicy exercises every kind of rule the table can hold: a named
// port, CIDRs of both families, reject, escalate, a logged rule, observe
// mode, a wall and a conflict class.
const cliPolicy = basePolicy + `---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: a-out, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: a}}}
  egress:
    - {name: named, action: allow, to: [{selector: {matchLabels: {app: b}}}], services: [{protocol: tcp, port: http}]}
    - {name: ask, action: escalate, services: [{protocol: tcp, port: 9090}]}
    - {name: out, action: allow, to: [{cidr: 203.0.113.0/24, except: [203.0.113.128/25]}, {cidr: "2001:db8::/120"}], services: [{protocol: tcp, port: 443}], log: true}
    - {name: sctp, action: deny, services: [{protocol: sctp, port: 9}, {protocol: udp, port: 1000, endPort: 2000}]}
` + observePolicy + `---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: seg-a}
spec: {selector: {matchLabels: {app: a}}}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: seg-c}
spec: {selector: {matchLabels: {app: c}}}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: seg-b}
spec: {selector: {matchLabels: {app: b}}}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: seg-z}
spec: {selector: {matchLabels: {app: z}}}
---
apiVersion: bulkhead.dev/v1
kind: Wall
metadata: {name: a-c}
spec: {segments: [seg-a, seg-c]}
---
apiVersion: bulkhead.dev/v1
kind: ConflictClass
metadata: {name: cc}
spec:
  subjects: seg-b
  datasets: [{name: cee, segment: seg-c}, {name: zed, segment: seg-z}]
  scope: lifecycle
`

// The host's own nft lists the ruleset while Bulkhead's table is loaded:
// every rule, set and map of it, in text and JSON. Debian 12's nft 1.0.6
// aborted on every listing, even `nft list tables`, when a rule looked a
// map up with a key that another lookup had written (see "Carriers" in
// docs/dataplane.md). nft missing fails the test in CI (scripts/deps.sh
// installs nftables).
func TestHostNFTListsTheTable(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireCommand(t, "nft")
	h := newTestHostNamed(t, "bhnl", "a", "b", "c")
	d := h.newDataplane(Options{})
	h.apply(d, cliPolicy)
	// A second Apply: a delta, which rewrites range chains and adds
	// outcomes in place.
	h.apply(d, cliPolicy+`---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: c-out, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: c}}}
  egress: [{action: reject, to: [{cidr: 198.51.100.0/24}], services: [{protocol: icmp}, {protocol: icmpv6}]}]
`)
	list := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.ns.Name, "nft"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nft %s in the host namespace with Bulkhead's table loaded: %v\n%s", strings.Join(args, " "), err, tail(out))
		}
		return string(out)
	}
	if out := list("list", "tables"); !strings.Contains(out, "table inet "+TableName) {
		t.Errorf("nft list tables does not name table inet %s:\n%s", TableName, out)
	}
	ruleset := list("list", "ruleset")
	table := list("list", "table", "inet", TableName)
	for _, want := range []string{"chain forward", "map @addr4_g", "map @outcomes_g", "vmap @verdicts_g", "@rule_counts", "counter spoofed"} {
		if !strings.Contains(table, want) {
			t.Errorf("nft list table lacks %q:\n%s", want, table)
		}
	}
	if ruleset == "" {
		t.Error("nft list ruleset printed nothing")
	}
	var js struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(list("-j", "list", "ruleset")), &js); err != nil {
		t.Errorf("nft -j list ruleset: %v", err)
	}
	// nft lists every rule and set of the table, as the kernel holds them.
	var listed [2]int // rules, sets and maps
	for _, o := range js.Nftables {
		for kind, i := range map[string]int{"rule": 0, "set": 1, "map": 1} {
			var obj struct {
				Table string `json:"table"`
			}
			if raw, ok := o[kind]; ok && json.Unmarshal(raw, &obj) == nil && obj.Table == TableName {
				listed[i]++
			}
		}
	}
	if want := kernelCounts(t, h); listed != want {
		t.Errorf("nft -j list ruleset lists %d rules and %d sets of table %s; the kernel holds %d and %d",
			listed[0], listed[1], TableName, want[0], want[1])
	}
	if testing.Verbose() {
		t.Logf("nft list table inet %s:\n%s", TableName, table)
	}
}

// kernelCounts counts the rules and sets of Bulkhead's table through
// netlink.
func kernelCounts(t *testing.T, h *testHost) [2]int {
	t.Helper()
	d, c, err := dialNS("count", h.ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer d.closeNS()
	defer c.CloseLasting()
	f, err := readTable(c)
	if err != nil {
		t.Fatal(err)
	}
	rules := 0
	for _, ch := range f.chains {
		rs, err := c.GetRules(table(), &nftables.Chain{Name: ch, Table: table()})
		if err != nil {
			t.Fatal(err)
		}
		rules += len(rs)
	}
	return [2]int{rules, len(f.sets)}
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// The carriers are the decision's own: the packet mark another table set
// before Bulkhead's hook is still on every packet after it, and neither the
// conntrack mark nor the priority keeps what the decision wrote into them
// (a conntrack mark written on a new packet stays on the connection).
func TestCarriersLeaveNoTrace(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireCommand(t, "nft")
	h := newTestHostNamed(t, "bhnl", "a", "b")
	a, b := h.wls["a"], h.wls["b"]
	b.listen(t, "tcp", 8080)
	d := h.newDataplane(Options{})
	h.apply(d, basePolicy)
	probe := `table inet bhnl_probe {
	counter marked {}
	counter ctmarked {}
	counter prioritised {}
	counter seen {}
	chain pre {
		type filter hook prerouting priority mangle; policy accept;
		ip saddr 10.77.0.0/24 meta mark set 0x4000
	}
	chain post {
		type filter hook postrouting priority srcnat; policy accept;
		ip daddr 10.77.0.2 tcp dport 8080 counter name seen
		ip daddr 10.77.0.2 tcp dport 8080 meta mark 0x4000 counter name marked
		ip daddr 10.77.0.2 tcp dport 8080 ct mark != 0 counter name ctmarked
		ip daddr 10.77.0.2 tcp dport 8080 meta priority != none counter name prioritised
	}
}
`
	run := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns.Name, "nft"}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nft %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run(probe, "-f", "-")
	expectTCP(t, []tcpCase{{a, b.v4, 8080, resOK}, {a, b.v4, 8080, resOK}})
	var js struct {
		Nftables []struct {
			Counter *struct {
				Name    string `json:"name"`
				Packets int    `json:"packets"`
			} `json:"counter"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(run("", "-j", "list", "counters", "table", "inet", "bhnl_probe")), &js); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, o := range js.Nftables {
		if o.Counter != nil {
			got[o.Counter.Name] = o.Counter.Packets
		}
	}
	if got["seen"] < 2 || got["marked"] != got["seen"] || got["ctmarked"] != 0 || got["prioritised"] != 0 {
		t.Errorf("after Bulkhead's hook, of %d packets to b:8080: %d kept the packet mark (want all), %d had a conntrack mark, %d a priority (want none)",
			got["seen"], got["marked"], got["ctmarked"], got["prioritised"])
	}
}
