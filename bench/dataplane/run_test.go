package benchdataplane

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	benchcompile "github.com/bulkhead-dev/bulkhead/bench/compile"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// sizeName names a policy size: "1k", "10k", "100k".
func sizeName(rules int) string { return fmt.Sprintf("%dk", rules/1000) }

// TestFigures measures everything docs/benchmarks.md reports, in one run
// of about 10–15 minutes; it runs only with BULKHEAD_BENCH=1.
// BULKHEAD_BENCH_ROUNDS (default 8) and BULKHEAD_BENCH_SECONDS (default
// 2, per workload and round) change its length; BULKHEAD_BENCH_MAXRULES
// leaves out the bigger policy sizes.
func TestFigures(t *testing.T) {
	if os.Getenv("BULKHEAD_BENCH") == "" {
		t.Skip("set BULKHEAD_BENCH=1")
	}
	nstest.RequireRoot(t)
	nstest.RequireCommand(t, "ip")
	if err := netns.DeleteAll(figuresPrefix); err != nil {
		t.Fatal(err)
	}
	if err := ensureIptables(); err != nil {
		t.Fatal(err)
	}
	p := params{rounds: envInt("BULKHEAD_BENCH_ROUNDS", 8), slices: 4, dur: time.Duration(envInt("BULKHEAD_BENCH_SECONDS", 2)) * time.Second}
	var report strings.Builder
	defer func() {
		if t.Failed() {
			fmt.Print("\nreport so far:\n" + report.String())
		}
	}()
	fmt.Fprintf(&report, "machine: %d CPUs (%s), %s, Go %s; iptables: %s\n", runtime.NumCPU(), cpuModel(), kernel(), runtime.Version(), iptablesVariant())
	fmt.Fprintf(&report, "rounds: %d, %v per workload, configuration and round, in %d slices\n\n", p.rounds, p.dur, p.slices)

	sizes := slices.DeleteFunc(slices.Clone(Sizes), func(sh benchcompile.Shape) bool { return sh.Rules > envInt("BULKHEAD_BENCH_MAXRULES", 100_000) })
	sets := make([]*policy.Set, len(sizes))
	for i, sh := range sizes {
		sets[i] = Generate(sh)
		fmt.Fprintf(&report, "policy %s: %d rules in %d policies, %d workloads, %d namespaces\n", sizeName(sh.Rules),
			CountRules(sets[i]), len(sets[i].Policies), len(sets[i].Workloads), len(sets[i].Namespaces))
	}

	cfgs := []config{{name: "no firewall", tp: newTopo(t, figuresPrefix, "none")}, {name: "conntrack only", tp: newTopo(t, figuresPrefix, "conntrack")}}
	if err := conntrackOnly(cfgs[1].tp.host); err != nil {
		t.Fatal(err)
	}
	for i, s := range sets {
		name := "iptables " + sizeName(sizes[i].Rules)
		tp := newTopo(t, figuresPrefix, name)
		rules := IptablesRules(s, int64(i)+1)
		start := time.Now()
		if err := iptablesRestore(tp.host, rules); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&report, "%s: %d rules loaded by iptables-restore in %v\n", name, strings.Count(rules, "\n-A "), time.Since(start).Round(time.Millisecond))
		cfgs = append(cfgs, config{name: name, tp: tp, enforce: true})
	}
	bh, extra := bulkheadConfigs(t, sets, &report)
	cfgs = append(cfgs, bh...)

	start := time.Now()
	res := runRounds(t, cfgs, p)
	fmt.Fprintf(&report, "\nrounds took %v\n\nMedians over rounds:\n\n%s\nRatios (median over rounds of the ratio measured within each round):\n\n%s\n",
		time.Since(start).Round(time.Second), medianTable(cfgs, res), ratioTable(cfgs, res, []string{"no firewall", "conntrack only", "iptables 10k"}))
	goals(&report, cfgs, res, extra)
	fmt.Print("\n" + report.String())
}

// goals prints PASS or MISS for every goal of issue 3; it never fails the
// test: the figures are reported, whatever they are.
func goals(w *strings.Builder, cfgs []config, res [][]sample, x extraFigures) {
	idx := map[string]int{}
	for i, c := range cfgs {
		idx[c.name] = i
	}
	verdict := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "MISS"
	}
	w.WriteString("| goal | measured | verdict |\n| --- | --- | --- |\n")
	pair := func(goal, a, b string, m metric, want float64) {
		i, okA := idx[a]
		j, okB := idx[b]
		if !okA || !okB {
			fmt.Fprintf(w, "| %s | not measured (%s missing) | MISSING |\n", goal, a)
			return
		}
		r := ratio(res[i], res[j], m)
		fmt.Fprintf(w, "| %s | %.2f | %s |\n", goal, r, verdict(r >= want))
	}
	bh := "bulkhead 100k"
	pair("100k rules: conn/s (1 client) ≥ 0.97 × conntrack only", bh, "conntrack only", metrics[0], 0.97)
	pair("100k rules: conn/s (8 clients) ≥ 0.97 × conntrack only", bh, "conntrack only", metrics[1], 0.97)
	pair("100k rules: bulk ≥ 0.95 × no firewall", bh, "no firewall", metrics[2], 0.95)
	pair("100k rules: conn/s (1 client) ≥ 2 × iptables 10k", bh, "iptables 10k", metrics[0], 2)
	pair("100k rules: conn/s (8 clients) ≥ 2 × iptables 10k", bh, "iptables 10k", metrics[1], 2)
	if i, ok := idx["conntrack only"]; ok {
		if j, ok := idx["iptables 10k"]; ok {
			fmt.Fprintf(w, "| (reference: conntrack only ÷ iptables 10k, the ceiling of any conntrack-based firewall here) | %.2f (1 client), %.2f (8 clients) | |\n",
				ratio(res[i], res[j], metrics[0]), ratio(res[i], res[j], metrics[1]))
		}
	}
	timed := func(goal string, d time.Duration, limit time.Duration, anySize bool) {
		switch {
		case d == 0:
			fmt.Fprintf(w, "| %s | not measured | MISSING |\n", goal)
		case x.size != "100k" && !anySize:
			fmt.Fprintf(w, "| %s | %v, but at %s rules only | MISSING |\n", goal, d, x.size)
		default:
			fmt.Fprintf(w, "| %s | %v | %s |\n", goal, d, verdict(d < limit))
		}
	}
	timed("initial load of 100k rules < 0.5 s", x.initialLoad, 500*time.Millisecond, false)
	timed("one changed rule (edited) in the kernel < 1 ms (median)", x.oneRule, time.Millisecond, false)
	timed("one changed rule (added) in the kernel < 1 ms (median)", x.addRule, time.Millisecond, false)
	timed("apply → enforced < 50 ms (median), agent holding 100k rules and workloads", x.applyEnforced, 50*time.Millisecond, false)
	timed("apply → enforced < 50 ms (median), agent holding the pair's policy only", x.applyEnforcedSmall, 50*time.Millisecond, true)
	if x.agentHeap == 0 {
		w.WriteString("| agent memory reported | not measured | MISSING |\n")
	} else {
		fmt.Fprintf(w, "| agent memory reported | heap in use %d MiB, RSS %d MiB, holding %s rules | PASS |\n", x.agentHeap>>20, x.agentRSS>>20, x.size)
	}
}

// extraFigures are the Bulkhead-only measurements.
type extraFigures struct {
	size                              string // the policy size they were measured at
	initialLoad, oneRule, addRule     time.Duration
	applyEnforced, applyEnforcedSmall time.Duration // holding 100k rules; holding the pair's policy only
	agentHeap, agentRSS               uint64
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return "Linux " + strings.TrimSpace(string(b))
}
