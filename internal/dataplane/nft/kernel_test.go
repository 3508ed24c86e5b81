package nft

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	gonflog "github.com/florianl/go-nflog/v2"
	"github.com/google/nftables"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

func TestMain(m *testing.M) {
	removeStale(prefix, 10*time.Minute)
	os.Exit(m.Run())
}

const basePolicy = `
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: b-in, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: b}}}
  isolate: [ingress]
  ingress:
    - name: web
      action: allow
      from: [{selector: {matchLabels: {app: a}}}]
      services: [{protocol: tcp, port: 8080}]
      log: true
    - name: refuse
      action: reject
      services: [{protocol: tcp, port: 8081}]
    - name: dns
      action: allow
      services: [{protocol: udp, port: 5353}]
    - name: ping
      action: allow
      services: [{protocol: icmp}, {protocol: icmpv6}]
`

// The policy is enforced between real sockets: allowed, denied (silently
// dropped) and rejected connections, TCP, UDP and ICMP, IPv4 and IPv6.
func TestEnforce(t *testing.T) {
	h := newTestHost(t, "a", "b", "c")
	a, b, c := h.wls["a"], h.wls["b"], h.wls["c"]
	for _, p := range []int{8080, 8081, 9000} {
		b.listen(t, "tcp", p)
	}
	b.listen(t, "udp", 5353)
	b.listen(t, "udp", 5354)
	c.listen(t, "tcp", 8080)
	d := h.newDataplane(Options{})
	h.apply(d, basePolicy)

	expectTCP(t, []tcpCase{
		{a, b.v4, 8080, resOK},
		{a, b.v6, 8080, resOK},
		{c, b.v4, 8080, resTimeout},
		{c, b.v6, 8080, resTimeout},
		{a, b.v4, 8081, resRefused},
		{a, b.v6, 8081, resRefused},
		{a, b.v4, 9000, resTimeout},
		{b, c.v4, 8080, resOK}, // c has no policy: everything allowed
		{b, c.v6, 8080, resOK},
	})
	if !a.tryUDP(t, b.v4, 5353, true) || !a.tryUDP(t, b.v6, 5353, true) {
		t.Errorf("udp a → b:5353 blocked, want allowed")
	}
	if a.tryUDP(t, b.v4, 5354, false) {
		t.Errorf("udp a → b:5354 allowed, want denied")
	}
	if !a.ping(t, b.v4, true) || !a.ping(t, b.v6, true) {
		t.Errorf("ping a → b blocked, want allowed")
	}
	cs, err := d.Counters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := cs.Rules["Policy/app/b-in/ingress/web"]; got.Packets == 0 {
		t.Errorf("counter of rule web = %+v, want packets; all: %+v", got, cs.Rules)
	}
}

const wallPolicy = `
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
kind: Wall
metadata: {name: a-c}
spec: {segments: [seg-a, seg-c]}
`

// A wall denies ahead of every tier, in both directions, and counts.
func TestWall(t *testing.T) {
	h := newTestHost(t, "a", "b", "c")
	a, b, c := h.wls["a"], h.wls["b"], h.wls["c"]
	for _, w := range h.wls {
		w.listen(t, "tcp", 8080)
	}
	d := h.newDataplane(Options{})
	h.apply(d, wallPolicy)
	expectTCP(t, []tcpCase{
		{a, c.v4, 8080, resTimeout},
		{c, a.v6, 8080, resTimeout},
		{a, b.v4, 8080, resOK},
		{b, c.v6, 8080, resOK},
	})
	cs, err := d.Counters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if cs.Walls["a-c"].Packets == 0 {
		t.Errorf("wall counter = %+v, want packets", cs.Walls)
	}
}

// A workload that takes another's address (it has CAP_NET_ADMIN in its
// own namespace) is dropped and counted, in IPv4 and IPv6.
func TestAntiSpoofing(t *testing.T) {
	h := newTestHost(t, "a", "b", "c")
	a, b, c := h.wls["a"], h.wls["b"], h.wls["c"]
	c.listen(t, "tcp", 8080)
	d := h.newDataplane(Options{})
	h.apply(d, basePolicy)
	expectTCP(t, []tcpCase{{a, c.v4, 8080, resOK}})
	before, _ := d.Counters(context.Background())
	nstest.Run(t, a.ns, "ip", "addr", "add", b.v4.String()+"/32", "dev", "eth0")
	nstest.Run(t, a.ns, "ip", "addr", "add", b.v6.String()+"/128", "dev", "eth0", "nodad")
	for _, src := range []struct{ from, to netip.Addr }{{b.v4, c.v4}, {b.v6, c.v6}} {
		conn, err := a.dialFrom(src.from, src.to, 8080, false)
		if got := classify(t, conn, err); got != resTimeout {
			t.Errorf("spoofed %s → %s = %s, want timeout", src.from, src.to, got)
		}
	}
	after, err := d.Counters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if after.Spoofed.Packets < before.Spoofed.Packets+2 {
		t.Errorf("spoofed counter %d → %d, want at least 2 more", before.Spoofed.Packets, after.Spoofed.Packets)
	}
	for _, dst := range []netip.Addr{c.v4, c.v6} { // its own addresses still work
		src := a.v4
		if dst.Is6() {
			src = a.v6
		}
		conn, err := a.dialFrom(src, dst, 8080, true)
		if got := classify(t, conn, err); got != resOK {
			t.Errorf("%s → %s = %s, want ok", src, dst, got)
		}
	}
}

// An established connection survives an Apply that changes other rules,
// and a restart: a new Dataplane adopts the table (a new generation, the
// old one swept) without cutting it.
func TestEstablishedSurvivesApplyAndRestart(t *testing.T) {
	h := newTestHost(t, "a", "b", "c")
	a, b, c := h.wls["a"], h.wls["b"], h.wls["c"]
	b.listen(t, "tcp", 8080)
	d := h.newDataplane(Options{})
	h.apply(d, basePolicy)
	conn, err := a.dial(b.v4, 8080)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	changed := strings.Replace(basePolicy, "port: 5353", "port: 5300", 1)
	h.apply(d, changed)
	if err := echo(conn, "after apply"); err != nil {
		t.Fatalf("established connection cut by Apply: %v", err)
	}
	chains := tableShape(t, d)
	d.Close()

	claims := maps.Clone(d.model.claim)
	d2 := h.newDataplane(Options{})
	// The counter elements name their rules (comments the kernel keeps):
	// the new model knows each key's owner before it writes anything.
	if _, m2, err := d2.newGeneration(dataplane.Desired{}); err != nil || len(claims) == 0 || !maps.Equal(m2.claim, claims) {
		t.Errorf("adopted counter owners %v (%v), want %v", m2.claim, err, claims)
	}
	if err := echo(conn, "after close"); err != nil {
		t.Fatalf("established connection cut by Close: %v", err)
	}
	h.apply(d2, changed)
	if err := echo(conn, "after adoption"); err != nil {
		t.Fatalf("established connection cut by adoption: %v", err)
	}
	if got := tableShape(t, d2); got != chains {
		t.Errorf("after adoption the table holds %s, want %s (the old generation swept)", got, chains)
	}
	if d2.model.b.gen != 2 {
		t.Errorf("generation after adoption = %d, want 2", d2.model.b.gen)
	}
	expectTCP(t, []tcpCase{{a, b.v4, 8080, resOK}, {c, b.v4, 8080, resTimeout}})
}

func tableShape(t *testing.T, d *Dataplane) string {
	t.Helper()
	f, err := readTable(d.conn)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d chains, %d sets, %d counters", len(f.chains), len(f.sets), len(f.counters))
}

// Cleanup removes the table; everything is allowed again.
func TestCleanup(t *testing.T) {
	h := newTestHost(t, "a", "b", "c")
	c, b := h.wls["c"], h.wls["b"]
	b.listen(t, "tcp", 8080)
	d := h.newDataplane(Options{})
	h.apply(d, basePolicy)
	expectTCP(t, []tcpCase{{c, b.v4, 8080, resTimeout}})
	if err := Cleanup(h.ns.Path()); err != nil {
		t.Fatal(err)
	}
	if err := Cleanup(h.ns.Path()); err != nil { // idempotent
		t.Fatal(err)
	}
	f, err := readTable(d.conn)
	if err != nil {
		t.Fatal(err)
	}
	if f.exists {
		t.Fatalf("table still there after Cleanup: %+v", f)
	}
	expectTCP(t, []tcpCase{{c, b.v4, 8080, resOK}})
}

// Logged rules and observe-mode "would deny" reach NFLOG tagged with the
// rule id.
func TestNFLOG(t *testing.T) {
	h := newTestHost(t, "a", "b", "c")
	a, b, c := h.wls["a"], h.wls["b"], h.wls["c"]
	b.listen(t, "tcp", 8080)
	c.listen(t, "tcp", 8080)
	const group = 7
	records := readNFLOG(t, h, group)
	d := h.newDataplane(Options{LogGroup: group})
	h.apply(d, basePolicy+observePolicy)
	expectTCP(t, []tcpCase{{a, b.v4, 8080, resOK}, {a, c.v4, 8080, resOK}})
	want := []string{
		LogPrefix(LogAllow, "Policy/app/b-in/ingress/web"),
		LogPrefix(LogWouldDeny, "Policy/app/c-observe/ingress/no-a"),
	}
	deadline := time.After(2 * time.Second)
	seen := map[string]bool{}
	for len(seen) < len(want) {
		select {
		case p := <-records:
			for _, w := range want {
				if p == w {
					seen[w] = true
				}
			}
		case <-deadline:
			t.Fatalf("NFLOG records seen %v, want %v", seen, want)
		}
	}
}

const observePolicy = `
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: c-observe, namespace: app}
spec:
  mode: observe
  appliesTo: {selector: {matchLabels: {app: c}}}
  ingress:
    - name: no-a
      action: deny
      from: [{selector: {matchLabels: {app: a}}}]
`

// readNFLOG subscribes to an NFLOG group in the host namespace and
// returns the prefixes of the records.
func readNFLOG(t *testing.T, h *testHost, group uint16) <-chan string {
	t.Helper()
	f, err := os.Open(h.ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	nf, err := gonflog.Open(&gonflog.Config{NetNS: int(f.Fd()), Group: group, Copymode: gonflog.CopyPacket, Bufsize: 128})
	if err != nil {
		t.Fatalf("nflog: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); nf.Close() })
	out := make(chan string, 64)
	err = nf.RegisterWithErrorFunc(ctx, func(a gonflog.Attribute) int {
		if a.Prefix != nil {
			select {
			case out <- *a.Prefix:
			default:
			}
		}
		return 0
	}, func(err error) int { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Escalation without a listener on the queue fails closed.
func TestEscalateFailsClosed(t *testing.T) {
	h := newTestHost(t, "a", "b")
	a, b := h.wls["a"], h.wls["b"]
	b.listen(t, "tcp", 8080)
	b.listen(t, "tcp", 8081)
	d := h.newDataplane(Options{QueueNum: 3})
	h.apply(d, `
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: a-out, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: a}}}
  egress:
    - name: ask
      action: escalate
      services: [{protocol: tcp, port: 8080}]
`)
	expectTCP(t, []tcpCase{{a, b.v4, 8080, resTimeout}, {a, b.v4, 8081, resOK}})
	cs, _ := d.Counters(context.Background())
	if cs.Rules["Policy/app/a-out/egress/ask"].Packets == 0 {
		t.Errorf("escalate rule not counted: %+v", cs.Rules)
	}
}

// Dump prints the table with its maps decoded.
func TestDump(t *testing.T) {
	h := newTestHost(t, "a", "b")
	d := h.newDataplane(Options{})
	h.apply(d, basePolicy+"---\n"+wallPolicy)
	var buf bytes.Buffer
	if err := d.Dump(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"table inet bulkhead", "chain forward"} {
		if !strings.Contains(out, want) {
			t.Errorf("dump lacks %q:\n%s", want, out)
		}
	}
	if testing.Verbose() {
		t.Logf("dump:\n%s", out)
	}
}

// New connections keep being allowed while the agent restarts and
// adopts the table again and again: no window in which nothing enforces
// or in which an allowed connection is dropped.
func TestAdoptionHasNoWindow(t *testing.T) {
	h := newTestHost(t, "a", "b", "c")
	a, b, c := h.wls["a"], h.wls["b"], h.wls["c"]
	b.listen(t, "tcp", 8080)
	d := h.newDataplane(Options{})
	h.apply(d, basePolicy)
	stop := make(chan struct{})
	done := make(chan []string)
	go func() {
		var fails []string
		for i := 0; i < 5000; i++ {
			select {
			case <-stop:
				done <- fails
				return
			default:
			}
			// A dropped SYN is retransmitted after 1 s: a connection that
			// takes longer than 900 ms met a window.
			conn, err := a.dialWithin(b.v4, 8080, 900*time.Millisecond)
			if err != nil {
				fails = append(fails, err.Error())
				continue
			}
			conn.Close()
		}
		done <- fails
	}()
	for i := range 4 {
		d.Close()
		d = h.newDataplane(Options{})
		policy := basePolicy
		if i%2 == 1 {
			policy = strings.Replace(basePolicy, "port: 5353", "port: 5300", 1)
		}
		h.apply(d, policy)
	}
	close(stop)
	if fails := <-done; len(fails) > 0 {
		t.Errorf("%d connections failed during adoptions: %v", len(fails), fails[0])
	}
	if d.model.b.gen != 5 {
		t.Errorf("generation = %d, want 5", d.model.b.gen)
	}
	expectTCP(t, []tcpCase{{c, b.v4, 8080, resTimeout}})
}

// With no state the table still checks sources, and lets everything else
// through; a state enforces; going back to none lets everything through.
func TestNilState(t *testing.T) {
	h := newTestHost(t, "a", "b", "c")
	a, b, c := h.wls["a"], h.wls["b"], h.wls["c"]
	b.listen(t, "tcp", 8080)
	d := h.newDataplane(Options{})
	nothing := dataplane.Desired{Attachments: h.atts}
	if err := d.Apply(context.Background(), nothing); err != nil {
		t.Fatal(err)
	}
	expectTCP(t, []tcpCase{{c, b.v4, 8080, resOK}})
	nstest.Run(t, a.ns, "ip", "addr", "add", c.v4.String()+"/32", "dev", "eth0")
	conn, err := a.dialFrom(c.v4, b.v4, 8080, false)
	if got := classify(t, conn, err); got != resTimeout {
		t.Errorf("spoofed with no state = %s, want timeout", got)
	}
	h.apply(d, basePolicy)
	expectTCP(t, []tcpCase{{c, b.v4, 8080, resTimeout}})
	if err := d.Apply(context.Background(), nothing); err != nil {
		t.Fatal(err)
	}
	expectTCP(t, []tcpCase{{c, b.v4, 8080, resOK}})
}

// A connection into a conflict class's dataset escalates: with nobody on
// the queue it is dropped (fail closed).
func TestConflictClassEscalates(t *testing.T) {
	h := newTestHost(t, "a", "b")
	a, b := h.wls["a"], h.wls["b"]
	a.listen(t, "tcp", 8080)
	b.listen(t, "tcp", 8080)
	d := h.newDataplane(Options{})
	h.apply(d, `
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: seg-b}
spec: {selector: {matchLabels: {app: b}}}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: seg-a}
spec: {selector: {matchLabels: {app: a}}}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: seg-z}
spec: {selector: {matchLabels: {app: z}}}
---
apiVersion: bulkhead.dev/v1
kind: ConflictClass
metadata: {name: cc}
spec:
  subjects: seg-a
  datasets: [{name: bee, segment: seg-b}, {name: zed, segment: seg-z}]
  scope: lifecycle
`)
	expectTCP(t, []tcpCase{{a, b.v4, 8080, resTimeout}, {b, a.v4, 8080, resOK}})
}

// The probes find what the ruleset needs and choose a queue; they leave
// nothing behind.
func TestFeatures(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.NS(t, prefix+"f")
	d, err := New(Options{NetNS: ns.Path()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	f := d.Features()
	for _, k := range []string{FeatureConcatInterval, FeatureNamedCounters, FeatureNFLOG, FeatureReject} {
		if f[k] != "yes" {
			t.Errorf("feature %s = %q, want yes", k, f[k])
		}
	}
	if f[FeatureQueue] == "" {
		t.Errorf("no queue chosen: %v", f)
	}
	t.Logf("features: %v", f)
	tables, err := d.conn.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	if len(tables) != 0 {
		t.Errorf("the probes left %d tables behind", len(tables))
	}
}

// A table named bulkhead that Bulkhead did not make is left alone.
func TestForeignTableRefused(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.NS(t, prefix+"x")
	d, err := New(Options{NetNS: ns.Path()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	policyAccept := nftables.ChainPolicyAccept
	d.conn.AddTable(table())
	d.conn.AddChain(&nftables.Chain{Name: chainForward, Table: table(), Hooknum: nftables.ChainHookForward,
		Priority: nftables.ChainPriorityFilter, Type: nftables.ChainTypeFilter, Policy: &policyAccept})
	d.conn.AddRule(&nftables.Rule{Table: table(), Chain: &nftables.Chain{Name: chainForward, Table: table()}, Exprs: accept})
	if err := d.conn.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(context.Background(), dataplane.Desired{}); err == nil || !strings.Contains(err.Error(), "not made by Bulkhead") {
		t.Errorf("Apply on a foreign table = %v, want a refusal", err)
	}
	if err := Cleanup(ns.Path()); err == nil {
		t.Errorf("Cleanup removed a foreign table")
	}
}

// A change of the policy's CIDRs changes the outside ranges: Apply writes
// them into the other range slot and points the chains at it, in the same
// generation, and the new CIDR is enforced.
func TestRangeChange(t *testing.T) {
	h := newTestHost(t, "a", "b", "c")
	a, b, c := h.wls["a"], h.wls["b"], h.wls["c"]
	b.listen(t, "tcp", 8080)
	c.listen(t, "tcp", 8080)
	deny := func(cidr string) string {
		return `
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: a-out, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: a}}}
  egress:
    - {name: no, action: deny, to: [{cidr: ` + cidr + `}]}
`
	}
	d := h.newDataplane(Options{})
	h.apply(d, deny("10.77.0.3/32"))
	expectTCP(t, []tcpCase{{a, c.v4, 8080, resTimeout}, {a, b.v4, 8080, resOK}})
	h.apply(d, deny("10.77.0.2/32"))
	expectTCP(t, []tcpCase{{a, c.v4, 8080, resOK}, {a, b.v4, 8080, resTimeout}})
	h.apply(d, deny("10.77.0.3/32"))
	expectTCP(t, []tcpCase{{a, c.v4, 8080, resTimeout}, {a, b.v4, 8080, resOK}})
	if d.model.b.gen != 1 {
		t.Errorf("generation = %d, want 1 (new ranges are a delta)", d.model.b.gen)
	}
	f, err := readTable(d.conn)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range append(f.chains, f.sets...) {
		if !isPersistent(n) && genOf(n) != 1 {
			t.Errorf("%s left over from another generation", n)
		}
	}
}

// A wall that goes away in a change that also writes a new generation (a
// CIDR appears): its counter is still referenced by the live generation
// until the switch, so it must be deleted in the switch, not before.
func TestWallRemovedWithNewGeneration(t *testing.T) {
	h := newTestHost(t, "a", "b", "c")
	a, c := h.wls["a"], h.wls["c"]
	c.listen(t, "tcp", 8080)
	d := h.newDataplane(Options{})
	h.apply(d, wallPolicy)
	expectTCP(t, []tcpCase{{a, c.v4, 8080, resTimeout}})
	h.apply(d, `
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: outside}
spec: {cidrs: [{cidr: 192.0.2.0/24}]}
`)
	expectTCP(t, []tcpCase{{a, c.v4, 8080, resOK}})
	if cs, err := d.Counters(context.Background()); err != nil || len(cs.Walls) != 0 {
		t.Errorf("counters = %+v, %v; want no wall counters", cs.Walls, err)
	}
}
