package benchcompile

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// shapeYAML renders the policies of a generated shape as the native
// documents a user applies: the whole path (decode, validate, compile,
// delta, kernel) is what TestAgentShapeFigures measures.
func shapeYAML(set *policy.Set) string {
	var b strings.Builder
	for _, p := range set.Policies {
		fmt.Fprintf(&b, "---\napiVersion: bulkhead.dev/v1\nkind: Policy\nmetadata: {name: %s", p.Name)
		if p.Namespace != "" {
			fmt.Fprintf(&b, ", namespace: %s", p.Namespace)
		}
		fmt.Fprintf(&b, "}\nspec:\n  tier: %s\n  appliesTo: {selector: %s}\n", tierName(p.Tier), selectorYAML(p.Subject.Workloads))
		var iso []string
		for d, on := range p.Isolate {
			if on {
				iso = append(iso, policy.Direction(d).String())
			}
		}
		if len(iso) > 0 {
			fmt.Fprintf(&b, "  isolate: [%s]\n", strings.Join(iso, ", "))
		}
		for _, d := range []policy.Direction{policy.Ingress, policy.Egress} {
			rules := p.Rules(d)
			if len(rules) == 0 {
				continue
			}
			fmt.Fprintf(&b, "  %s:\n", d)
			for _, r := range rules {
				fmt.Fprintf(&b, "    - {name: %s, action: %s", r.ID, r.Action)
				if len(r.Peers) > 0 {
					key := "from"
					if d == policy.Egress {
						key = "to"
					}
					fmt.Fprintf(&b, ", %s: [%s]", key, peerYAML(r.Peers[0]))
				}
				if len(r.Services) > 0 {
					s := r.Services[0]
					port := fmt.Sprint(s.Port)
					if s.Name != "" {
						port = s.Name
					}
					fmt.Fprintf(&b, ", services: [{protocol: %s, port: %s}]", strings.ToLower(s.Protocol.String()), port)
				}
				b.WriteString("}\n")
			}
		}
	}
	return b.String()
}

func tierName(t policy.Tier) string { return strings.ToLower(t.String()) }

func selectorYAML(s *policy.Selector) string {
	if s == nil || s.Empty() {
		return "{}"
	}
	var parts []string
	if len(s.MatchLabels) > 0 {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(s.MatchLabels)) {
			kv = append(kv, k+": "+s.MatchLabels[k])
		}
		parts = append(parts, "matchLabels: {"+strings.Join(kv, ", ")+"}")
	}
	for _, r := range s.MatchExpressions {
		parts = append(parts, fmt.Sprintf("matchExpressions: [{key: %s, operator: %s, values: [%s]}]", r.Key, r.Operator, strings.Join(r.Values, ", ")))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func peerYAML(p policy.Peer) string {
	if len(p.CIDRs) > 0 {
		c := p.CIDRs[0]
		out := "{cidr: " + c.Prefix.String()
		if len(c.Except) > 0 {
			var ex []string
			for _, e := range c.Except {
				ex = append(ex, e.String())
			}
			out += ", except: [" + strings.Join(ex, ", ") + "]"
		}
		return out + "}"
	}
	out := "{selector: " + selectorYAML(p.Workloads)
	if p.Namespaces.Selector != nil {
		out += ", namespaceSelector: " + selectorYAML(p.Namespaces.Selector)
	}
	return out + "}"
}

func platformYAML(port int) api.Document {
	return api.Document{Name: "platform.yaml", Data: fmt.Sprintf("apiVersion: bulkhead.dev/v1\nkind: Policy\nmetadata: {name: platform}\nspec:\n  tier: infrastructure\n  appliesTo: {selector: {}}\n  ingress:\n    - {name: no-quarantine, action: deny, log: true, from: [{cidr: 198.51.100.0/24}]}\n  egress:\n    - {name: dns, action: allow, services: [{protocol: udp, port: %d}]}\n", port)}
}

// TestAgentShapeFigures applies each shape of rule set to a standalone
// agent whose nftables dataplane runs in a throwaway namespace, with the
// three selected workloads registered, and reports the first load
// (apply → enforced) and a change of the platform policy. It needs root
// and runs with BULKHEAD_BENCH=1.
//
// BULKHEAD_BENCH_DATAPLANE=null measures the agent alone, with a
// dataplane that enforces nothing (no root needed);
// BULKHEAD_BENCH_SHAPES=ipblocks,except and BULKHEAD_BENCH_SIZES=20000
// pick what runs; BULKHEAD_BENCH_CPUPROFILE=dir writes a CPU profile of
// each first load there.
func TestAgentShapeFigures(t *testing.T) {
	if os.Getenv("BULKHEAD_BENCH") == "" {
		t.Skip("set BULKHEAD_BENCH=1")
	}
	if os.Getenv("BULKHEAD_BENCH_DATAPLANE") != "null" {
		nstest.RequireRoot(t)
	}
	sizes := envInts(t, "BULKHEAD_BENCH_SIZES", []int{1000, 10_000, 100_000})
	shapes := []RuleShape{ShapeIPBlocks, ShapeExcept, ShapeNamedPorts, ShapeSelectors}
	if v := os.Getenv("BULKHEAD_BENCH_SHAPES"); v != "" {
		shapes = nil
		for _, f := range strings.Split(v, ",") {
			shapes = append(shapes, RuleShape(f))
		}
	}
	for _, shape := range shapes {
		for _, n := range sizes {
			t.Run(fmt.Sprintf("%s/%d", shape, n), func(t *testing.T) { agentShape(t, shape, n) })
		}
	}
}

// phases keeps the phases of the agent's last "objects changed" record.
type phases struct {
	mu   sync.Mutex
	last map[string]time.Duration
}

func (p *phases) Enabled(context.Context, slog.Level) bool { return true }
func (p *phases) WithAttrs([]slog.Attr) slog.Handler       { return p }
func (p *phases) WithGroup(string) slog.Handler            { return p }
func (p *phases) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "objects changed" {
		return nil
	}
	m := map[string]time.Duration{}
	r.Attrs(func(a slog.Attr) bool {
		if a.Value.Kind() == slog.KindDuration {
			m[a.Key] = a.Value.Duration()
		}
		return true
	})
	p.mu.Lock()
	p.last = m
	p.mu.Unlock()
	return nil
}

func (p *phases) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, k := range []string{"read", "validate", "compile", "dataplane"} {
		out = append(out, fmt.Sprintf("%s=%v", k, p.last[k].Round(100*time.Microsecond)))
	}
	return strings.Join(out, " ")
}

// nullDataplane enforces nothing: the agent alone is measured.
type nullDataplane struct{}

func (nullDataplane) Apply(context.Context, dataplane.Desired) error { return nil }
func (nullDataplane) Counters(context.Context) (dataplane.Counters, error) {
	return dataplane.Counters{}, nil
}
func (nullDataplane) Close() error { return nil }

func envInts(t *testing.T, name string, def []int) []int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out = append(out, n)
	}
	return out
}

func shapeDataplane(t *testing.T) dataplane.Dataplane {
	if os.Getenv("BULKHEAD_BENCH_DATAPLANE") == "null" {
		return nullDataplane{}
	}
	host := nstest.NS(t, "bhcs")
	t.Cleanup(func() { _ = nft.Cleanup(host.Path()) })
	dp, err := nft.New(nft.Options{NetNS: host.Path()})
	if err != nil {
		t.Fatal(err)
	}
	return dp
}

// startProfile starts a CPU profile when BULKHEAD_BENCH_CPUPROFILE names
// a directory; the returned function stops it.
func startProfile(t *testing.T, name string) func() {
	dir := os.Getenv("BULKHEAD_BENCH_CPUPROFILE")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, name+".pprof"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

func agentShape(t *testing.T, shape RuleShape, n int) {
	ctx := context.Background()
	dp := shapeDataplane(t)
	ph := &phases{}
	a, err := agent.Start(ctx, agent.Options{StateDir: filepath.Join(t.TempDir(), "state"), Host: ShapeHost, Dataplane: dp, Logger: slog.New(ph)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	set := GenerateShape(shape, n, 1)
	for _, w := range set.Workloads[:3] {
		reg := api.WorkloadRegistration{Namespace: w.Namespace, Name: w.Name, Labels: w.Labels,
			IPs: []string{w.IPs[0].String()}, Interface: "bhcs" + w.Name[len(w.Name)-1:]}
		for _, p := range w.Ports {
			reg.Ports = append(reg.Ports, api.NamedPort{Name: p.Name, Port: p.Port, Protocol: "tcp"})
		}
		if _, err := a.RegisterWorkload(ctx, reg); err != nil {
			t.Fatal(err)
		}
	}
	docs := []api.Document{{Name: "shape.yaml", Data: shapeYAML(&policy.Set{Policies: set.Policies[1:]})}, platformYAML(53)}
	runtime.GC()
	stop := startProfile(t, fmt.Sprintf("agent-%s-%d", shape, n))
	start, cpu0 := time.Now(), cpuTime()
	res, err := a.Apply(ctx, api.ApplyRequest{Documents: docs})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	first, firstCPU, firstPhases := time.Since(start), cpuTime()-cpu0, ph.String()
	stop()
	var edits []time.Duration
	var kernel []int64
	for i := 0; i < 6; i++ {
		start := time.Now()
		r, err := a.Apply(ctx, api.ApplyRequest{Documents: []api.Document{platformYAML(5300 + i%2)}})
		if err != nil || len(r.Updated) != 1 {
			t.Fatalf("platform change: %v %v", r, err)
		}
		edits = append(edits, time.Since(start))
		kernel = append(kernel, r.EnforcedMicros)
	}
	slices.Sort(edits)
	slices.Sort(kernel)
	t.Logf("%-10s %6d rules: first load: apply %v, cpu %v, enforced after %v (%s); platform change: median apply %v, enforced after %v (last: %s)",
		shape, n, first.Round(time.Millisecond), firstCPU.Round(time.Millisecond), (time.Duration(res.EnforcedMicros) * time.Microsecond).Round(time.Millisecond),
		firstPhases, edits[len(edits)/2].Round(100*time.Microsecond), time.Duration(kernel[len(kernel)/2])*time.Microsecond, ph.String())
}

// TestReadShapeFigures reports what reading the documents of a shape
// costs (objects.Read, the agent's read phase without its bookkeeping),
// CPU and wall, best of three. It runs with BULKHEAD_BENCH=1 and takes
// BULKHEAD_BENCH_SHAPES and BULKHEAD_BENCH_SIZES.
func TestReadShapeFigures(t *testing.T) {
	if os.Getenv("BULKHEAD_BENCH") == "" {
		t.Skip("set BULKHEAD_BENCH=1")
	}
	shapes := []RuleShape{ShapeIPBlocks}
	if v := os.Getenv("BULKHEAD_BENCH_SHAPES"); v != "" {
		shapes = nil
		for _, f := range strings.Split(v, ",") {
			shapes = append(shapes, RuleShape(f))
		}
	}
	for _, shape := range shapes {
		for _, n := range envInts(t, "BULKHEAD_BENCH_SIZES", []int{10_000, 100_000}) {
			set := GenerateShape(shape, n, 1)
			doc := []byte(shapeYAML(&policy.Set{Policies: set.Policies[1:]}))
			bestCPU, bestWall := time.Duration(1<<62), time.Duration(1<<62)
			for range 3 {
				runtime.GC()
				start, cpu0 := time.Now(), cpuTime()
				objs, errs := objects.Read("shape.yaml", doc)
				cpu, wall := cpuTime()-cpu0, time.Since(start)
				if len(errs) > 0 || len(objs) == 0 {
					t.Fatalf("read: %v", errs)
				}
				bestCPU, bestWall = min(bestCPU, cpu), min(bestWall, wall)
			}
			t.Logf("%-10s %6d rules (%d KiB): objects.Read cpu %v, wall %v (best of 3)", shape, n, len(doc)>>10,
				bestCPU.Round(time.Millisecond), bestWall.Round(time.Millisecond))
		}
	}
}
