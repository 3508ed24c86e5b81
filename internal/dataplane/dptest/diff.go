package dptest

import (
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// DiffConfig sizes a differential run.
type DiffConfig struct {
	Worlds, Probes int
	Seed           int64 // 0: from BULKHEAD_SEED, else the clock
	Parallel       int   // probes in flight at once; 0: 8
}

// DefaultDiffConfig is bounded for CI (8 worlds × 25 probes) and larger
// with BULKHEAD_LONG=1 (40 × 60).
func DefaultDiffConfig() DiffConfig {
	if os.Getenv("BULKHEAD_LONG") == "1" {
		return DiffConfig{Worlds: 40, Probes: 60}
	}
	return DiffConfig{Worlds: 8, Probes: 25}
}

// Differential builds random small worlds (one host, 4 to 8 workloads in
// 2 or 3 namespaces, random policies across tiers with every action,
// selectors, ports and ranges, named ports, some walls, some observe
// mode), sends random connections through h and asks the reference
// evaluator (policy.Conntrack) about each: they must agree (Connected ↔
// allow, Refused ↔ reject, Dropped ↔ deny or escalate). World i is made
// from seed+i: a disagreement prints the world's policy, its workloads,
// the probe and the command that replays it.
func Differential(t *testing.T, h Harness, cfg DiffConfig) {
	seed := cfg.Seed
	if seed == 0 {
		if s, err := strconv.ParseInt(os.Getenv("BULKHEAD_SEED"), 10, 64); err == nil {
			seed = s
		} else {
			seed = time.Now().UnixNano() % 1_000_000_000
		}
	}
	if cfg.Parallel == 0 {
		cfg.Parallel = 8
	}
	t.Logf("differential on %s: %d worlds × %d probes, seed %d (replay: BULKHEAD_SEED=%d)", h.Name(), cfg.Worlds, cfg.Probes, seed, seed)
	for i := 0; i < cfg.Worlds; i++ {
		t.Run(fmt.Sprintf("world-%d", i), func(t *testing.T) {
			runWorld(t, h, genWorld(rand.New(rand.NewSource(seed+int64(i)))), cfg, seed)
		})
	}
}

// genWorkload is a workload of a random world.
type genWorkload struct {
	name, labels, addrs, ports string
}

type randomWorld struct {
	workloads []genWorkload
	policy    string // YAML
	probes    []probe
}

type probe struct {
	from, to int // workload indexes
	v6       bool
	proto    policy.Protocol
	port     int
}

func runWorld(t *testing.T, h Harness, rw randomWorld, cfg DiffConfig, seed int64) {
	w := NewWorld(t, h)
	wls := make([]*WL, len(rw.workloads))
	for i, g := range rw.workloads {
		wls[i] = w.Add(g.name, g.labels, g.addrs, g.ports)
	}
	if err := w.TryApply(rw.policy); err != nil {
		t.Fatalf("%v\nworld:\n%s", err, rw.describe())
	}
	probes := rw.probes
	if len(probes) > cfg.Probes {
		probes = probes[:cfg.Probes]
	}
	type result struct {
		p       probe
		want    Outcome
		got     Outcome
		detail  string
		verdict policy.Verdict
	}
	var mu sync.Mutex
	var bad []result
	var wg sync.WaitGroup
	sem := make(chan struct{}, cfg.Parallel)
	for _, p := range probes {
		from, to := wls[p.from], wls[p.to]
		dst := to.V4()
		if p.v6 {
			dst = to.V6()
		}
		src, _ := sameFamily(from.Addrs, dst)
		v := w.verdict(src, dst, p.proto, p.port)
		want := OutcomeOf(dataplane.Enforced(v))
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			got, detail := w.tryQuiet(Try{From: from.Name, To: dst, Protocol: p.proto, Port: p.port}, want)
			if got != want {
				mu.Lock()
				bad = append(bad, result{p, want, got, detail, v})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(bad) == 0 {
		return
	}
	var b strings.Builder
	long := ""
	if os.Getenv("BULKHEAD_LONG") == "1" {
		long = "BULKHEAD_LONG=1 "
	}
	fmt.Fprintf(&b, "%d of %d probes disagree with the reference evaluator (replay: %sBULKHEAD_SEED=%d go test -run '%s$')\n",
		len(bad), len(probes), long, seed, t.Name())
	for _, r := range bad {
		fmt.Fprintf(&b, "  %s -> %s %s: dataplane %s (%s), evaluator %s: %s\n", rw.workloads[r.p.from].name,
			rw.workloads[r.p.to].name, r.p.describe(), r.got, r.detail, r.want, explainVerdict(r.verdict))
	}
	b.WriteString("world:\n" + rw.describe())
	t.Error(b.String())
}

// tryQuiet is try without failing the test from another goroutine: a
// harness error becomes the detail of a zero outcome.
func (w *World) tryQuiet(tr Try, want Outcome) (Outcome, string) {
	got, detail, err := w.Host.Try(w.ctx, tr)
	if err != nil {
		return 0, "harness error: " + err.Error()
	}
	if got == Dropped && want != Dropped {
		tr.Timeout = RetryTimeout
		if again, d2, err := w.Host.Try(w.ctx, tr); err == nil && again != Dropped {
			return again, d2 + " (after one timeout)"
		}
	}
	return got, detail
}

func (p probe) describe() string {
	fam := "v4"
	if p.v6 {
		fam = "v6"
	}
	if p.proto.HasPorts() {
		return fmt.Sprintf("%v/%d %s", p.proto, p.port, fam)
	}
	return fmt.Sprintf("%v echo %s", p.proto, fam)
}

func explainVerdict(v policy.Verdict) string {
	side := func(s policy.Side) string {
		out := string(s.Action)
		if s.Rule != nil {
			out += " by " + s.Rule.ID
		}
		if s.WouldDeny != nil {
			out += " (would deny: " + s.WouldDeny.ID + ")"
		}
		return out
	}
	out := fmt.Sprintf("%s; egress %s; ingress %s", v.Action, side(v.Egress), side(v.Ingress))
	if v.Wall != nil {
		out += "; wall " + v.Wall.Name
	}
	return out
}

func (rw randomWorld) describe() string {
	var b strings.Builder
	for _, g := range rw.workloads {
		fmt.Fprintf(&b, "  workload %s labels {%s} addrs [%s] ports [%s]\n", g.name, g.labels, g.addrs, g.ports)
	}
	b.WriteString(rw.policy)
	return b.String()
}

// genWorld draws one world.
func genWorld(r *rand.Rand) randomWorld {
	g := &gen{r: r}
	var rw randomWorld
	nns := 2 + r.Intn(2)
	var docs []string
	for i := 0; i < nns; i++ {
		docs = append(docs, fmt.Sprintf("apiVersion: bulkhead.dev/v1\nkind: Namespace\nmetadata: {name: ns%d, labels: {env: %s}}\n", i, g.pick("prod", "dev")))
	}
	n := 4 + r.Intn(5)
	for i := 0; i < n; i++ {
		var labels []string
		if r.Intn(4) > 0 {
			labels = append(labels, "app="+g.pick("a", "b", "c"))
		}
		if r.Intn(2) == 0 {
			labels = append(labels, "tier="+g.pick("x", "y"))
		}
		var ports []string
		if r.Intn(2) == 0 {
			ports = append(ports, "web/tcp/"+g.pick("8080", "8081"))
		}
		if r.Intn(3) == 0 {
			ports = append(ports, "dns/udp/"+g.pick("53", "5353"))
		}
		rw.workloads = append(rw.workloads, genWorkload{
			name:   fmt.Sprintf("ns%d/w%d", r.Intn(nns), i),
			labels: strings.Join(labels, ","),
			addrs:  fmt.Sprintf("10.80.0.%d fd80::%x", i+1, i+1),
			ports:  strings.Join(ports, " "),
		})
	}
	docs = append(docs, segments)
	if r.Intn(3) == 0 {
		docs = append(docs, "apiVersion: bulkhead.dev/v1\nkind: Wall\nmetadata: {name: wall-ab}\nspec: {segments: [seg-a, seg-b]}\n")
	}
	for i, np := 0, 1+r.Intn(5); i < np; i++ {
		docs = append(docs, g.policy(i, nns))
	}
	rw.policy = strings.Join(docs, "---\n")
	for i := 0; i < 200; i++ {
		p := probe{from: r.Intn(n), to: r.Intn(n), v6: r.Intn(4) == 0}
		if p.from == p.to {
			continue
		}
		switch r.Intn(10) {
		case 0, 1, 2, 3, 4:
			p.proto, p.port = policy.TCP, g.pickInt(80, 443, 8080, 8081, 8050, 22)
		case 5, 6, 7:
			p.proto, p.port = policy.UDP, g.pickInt(53, 5353, 123)
		default:
			p.proto = policy.ICMP
			if p.v6 {
				p.proto = policy.ICMPv6
			}
		}
		rw.probes = append(rw.probes, p)
	}
	return rw
}

const segments = `apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: seg-a}
spec: {selector: {matchLabels: {app: a}}}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: seg-b}
spec: {selector: {matchLabels: {app: b}}}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: seg-low}
spec: {cidrs: [{cidr: 10.80.0.0/30}, {cidr: "fd80::/126"}]}
`

type gen struct{ r *rand.Rand }

func (g *gen) pick(s ...string) string { return s[g.r.Intn(len(s))] }
func (g *gen) pickInt(s ...int) int    { return s[g.r.Intn(len(s))] }

func (g *gen) selector() string {
	switch g.r.Intn(5) {
	case 0:
		return "{}"
	case 1:
		return fmt.Sprintf("{matchExpressions: [{key: %s, operator: %s}]}", g.pick("app", "tier"), g.pick("Exists", "DoesNotExist"))
	case 2:
		return fmt.Sprintf("{matchExpressions: [{key: app, operator: %s, values: [%s]}]}", g.pick("In", "NotIn"), g.pick("a", "b", "a, c"))
	}
	return fmt.Sprintf("{matchLabels: {%s}}", g.pick("app: a", "app: b", "app: c", "tier: x", "tier: y", "app: a, tier: x"))
}

func (g *gen) policy(i, nns int) string {
	r := g.r
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: bulkhead.dev/v1\nkind: Policy\nmetadata: {name: p%d", i)
	namespaced := r.Intn(5) < 2
	if namespaced {
		fmt.Fprintf(&b, ", namespace: ns%d", r.Intn(nns))
	}
	b.WriteString("}\nspec:\n")
	fmt.Fprintf(&b, "  tier: %s\n  priority: %d\n", g.pick(policy.TierNames()...), r.Intn(5)*10)
	if r.Intn(6) == 0 {
		b.WriteString("  mode: observe\n")
	}
	switch {
	case !namespaced && r.Intn(5) == 0:
		b.WriteString("  appliesTo: {segment: seg-a}\n")
	case !namespaced && r.Intn(4) == 0:
		fmt.Fprintf(&b, "  appliesTo: {namespaceSelector: {matchLabels: {env: %s}}, selector: %s}\n", g.pick("prod", "dev"), g.selector())
	default:
		fmt.Fprintf(&b, "  appliesTo: {selector: %s}\n", g.selector())
	}
	if iso := g.pick("", "", "[ingress]", "[egress]", "[ingress, egress]"); iso != "" {
		b.WriteString("  isolate: " + iso + "\n")
	}
	for _, dir := range []string{"ingress", "egress"} {
		n := r.Intn(4)
		if n == 0 {
			continue
		}
		fmt.Fprintf(&b, "  %s:\n", dir)
		for j := 0; j < n; j++ {
			b.WriteString("    - " + g.rule(dir) + "\n")
		}
	}
	return b.String()
}

func (g *gen) rule(dir string) string {
	r := g.r
	action := g.pick("allow", "allow", "allow", "deny", "deny", "reject", "reject", "pass", "pass", "escalate")
	parts := []string{"action: " + action}
	if r.Intn(3) > 0 {
		key := "from"
		if dir == "egress" {
			key = "to"
		}
		var peers []string
		for k := 0; k < 1+r.Intn(2); k++ {
			peers = append(peers, g.peer())
		}
		parts = append(parts, key+": ["+strings.Join(peers, ", ")+"]")
	}
	if r.Intn(4) > 0 {
		var svcs []string
		for k := 0; k < 1+r.Intn(2); k++ {
			svcs = append(svcs, g.service())
		}
		parts = append(parts, "services: ["+strings.Join(svcs, ", ")+"]")
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func (g *gen) peer() string {
	switch g.r.Intn(7) {
	case 0:
		return "{any: true}"
	case 1:
		return "{segment: " + g.pick("seg-a", "seg-b", "seg-low") + "}"
	case 2:
		return "{cidr: " + g.pick("10.80.0.0/29", "10.80.0.4/30", `"fd80::/125"`, "0.0.0.0/0") + "}"
	case 3:
		return fmt.Sprintf("{namespaces: [ns%d]}", g.r.Intn(3))
	case 4:
		return fmt.Sprintf("{namespaceSelector: {matchLabels: {env: %s}}, selector: %s}", g.pick("prod", "dev"), g.selector())
	}
	return "{selector: " + g.selector() + "}"
}

func (g *gen) service() string {
	switch g.r.Intn(9) {
	case 0:
		return "{protocol: tcp}"
	case 1:
		return "{protocol: tcp, port: 8000, endPort: 8100}"
	case 2:
		return "{protocol: tcp, port: web}"
	case 3:
		return "{protocol: udp, port: " + g.pick("53", "dns", "5353") + "}"
	case 4:
		return "{protocol: udp}"
	case 5:
		return "{protocol: " + g.pick("icmp", "icmpv6") + g.pick("", ", icmpType: 8", ", icmpType: 128") + "}"
	}
	return fmt.Sprintf("{protocol: tcp, port: %d}", g.pickInt(80, 443, 8080, 22))
}
