package nft

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	benchcompile "github.com/bulkhead-dev/bulkhead/bench/compile"
	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// TestLoadFigures measures the initial load of a big compiled state into
// the kernel and the cost of small changes once it is loaded. It takes a
// minute: BULKHEAD_BENCH=1 runs it.
func TestLoadFigures(t *testing.T) {
	if os.Getenv("BULKHEAD_BENCH") == "" {
		t.Skip("BULKHEAD_BENCH=1 measures the load figures")
	}
	nstest.RequireRoot(t)
	shapes := []struct {
		name  string
		shape benchcompile.Shape
		host  string
	}{
		{"full scale, one host", benchcompile.Full, "host-0007"},
		{"10,000 workloads on one host", benchcompile.Shape{Workloads: 10_000, Namespaces: 100, Hosts: 1, Rules: 3_000, Seed: 1}, "host-0000"},
	}
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) { loadFigures(t, sh.shape, sh.host) })
	}
}

func loadFigures(t *testing.T, sh benchcompile.Shape, host string) {
	set := benchcompile.Generate(sh)
	c, err := compile.New(set, host, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := c.State()
	t0 := time.Now()
	full := compile.Diff(nil, st)
	t.Logf("compile.Diff(nil, state): %d changes in %v (part of every first load)", full.Len(), time.Since(t0).Round(time.Millisecond))
	var atts []dataplane.Attachment
	for _, w := range set.Workloads {
		if w.Host == host {
			atts = append(atts, dataplane.Attachment{Workload: w.Key(), Interface: attach.HostIfName(w.Key()), Addrs: w.IPs})
		}
	}
	ns := nstest.NS(t, prefix+"l")
	d, err := New(Options{NetNS: ns.Path()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	start := time.Now()
	if err := d.Apply(ctx, dataplane.Desired{State: st, Set: set, Attachments: atts}); err != nil {
		t.Fatal(err)
	}
	load := time.Since(start)
	total := 0
	for _, n := range d.last {
		total += n
	}
	maps, ranges := d.model.pms.len()
	t.Logf("initial load: %d elements in %v (%d local workloads, %d port maps holding %d port ranges); %+v",
		total, load.Round(time.Millisecond), len(atts), maps, ranges, d.phases)
	t.Logf("elements per map: %s", perMap(d.last))

	smallChanges(t, d, c, set, atts)

	// A restart: a new Dataplane adopts the table with a new generation.
	d.Close()
	d2, err := New(Options{NetNS: ns.Path()})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	t0 = time.Now()
	if err := d2.Apply(ctx, dataplane.Desired{State: c.State(), Set: set, Attachments: atts}); err != nil {
		t.Fatal(err)
	}
	t.Logf("adoption after a restart (new generation, old one swept): %v", time.Since(t0).Round(time.Millisecond))
}

// smallChanges measures Applies of one workload and of one rule.
func smallChanges(t *testing.T, d *Dataplane, c *compile.Compiler, set *policy.Set, atts []dataplane.Attachment) {
	ctx := context.Background()
	// One workload elsewhere comes: one address, perhaps an identity.
	var times []time.Duration
	var elems []int
	for i := range 20 {
		w := &policy.Workload{Namespace: set.Workloads[i].Namespace, Name: fmt.Sprintf("extra-%d", i),
			Labels: set.Workloads[i].Labels, Host: "host-elsewhere",
			IPs: []netip.Addr{netip.AddrFrom4([4]byte{100, 64, 0, byte(i + 1)})}}
		if err := c.UpsertWorkload(w); err != nil {
			t.Fatal(err)
		}
		s := c.State()
		t0 := time.Now()
		if err := d.Apply(ctx, dataplane.Desired{State: s, Set: set, Attachments: atts}); err != nil {
			t.Fatal(err)
		}
		times = append(times, time.Since(t0))
		elems = append(elems, sum(d.last))
	}
	t.Logf("one workload added elsewhere: Apply median %v, max %v, element operations %v", median(times), slices.Max(times), elems)

	// One rule changes its port.
	times, elems = nil, nil
	for i := range 5 {
		p := set.Policies[len(set.Policies)-1-i]
		for j := range p.Ingress {
			for k := range p.Ingress[j].Services {
				p.Ingress[j].Services[k].Port++
			}
		}
		if err := c.SetPolicies(set); err != nil {
			t.Fatal(err)
		}
		s := c.State()
		t0 := time.Now()
		if err := d.Apply(ctx, dataplane.Desired{State: s, Set: set, Attachments: atts}); err != nil {
			t.Fatal(err)
		}
		times = append(times, time.Since(t0))
		elems = append(elems, sum(d.last))
		t.Logf("  %+v", d.phases)
	}
	t.Logf("one rule's port changed: Apply median %v, max %v, element operations %v", median(times), slices.Max(times), elems)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func perMap(m map[string]int) string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s %d, ", n, m[n])
	}
	return strings.TrimSuffix(b.String(), ", ")
}

// TestShapeLoadFigures measures the first load of the CIDR shapes of
// bench/compile (issue 8): a compiled State of n rules Applied to a fresh
// table, with the phases of the Apply and the elements per map.
// BULKHEAD_BENCH=1 runs it; BULKHEAD_BENCH_SHAPES (ipblocks,except) and
// BULKHEAD_BENCH_SIZES (10000,100000) pick what runs.
func TestShapeLoadFigures(t *testing.T) {
	if os.Getenv("BULKHEAD_BENCH") == "" {
		t.Skip("BULKHEAD_BENCH=1 measures the load figures")
	}
	nstest.RequireRoot(t)
	shapes := []string{"ipblocks", "except"}
	if v := os.Getenv("BULKHEAD_BENCH_SHAPES"); v != "" {
		shapes = strings.Split(v, ",")
	}
	sizes := []string{"10000", "100000"}
	if v := os.Getenv("BULKHEAD_BENCH_SIZES"); v != "" {
		sizes = strings.Split(v, ",")
	}
	for _, shape := range shapes {
		for _, n := range sizes {
			t.Run(shape+"/"+n, func(t *testing.T) {
				var rules int
				if _, err := fmt.Sscan(n, &rules); err != nil {
					t.Fatal(err)
				}
				shapeLoad(t, benchcompile.RuleShape(shape), rules)
			})
		}
	}
}

func shapeLoad(t *testing.T, shape benchcompile.RuleShape, n int) {
	set := benchcompile.GenerateShape(shape, n, 1)
	c, err := compile.New(set, benchcompile.ShapeHost, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := c.State()
	var atts []dataplane.Attachment
	for _, w := range set.Workloads {
		if w.Host == benchcompile.ShapeHost {
			atts = append(atts, dataplane.Attachment{Workload: w.Key(), Interface: attach.HostIfName(w.Key()), Addrs: w.IPs})
		}
	}
	ns := nstest.NS(t, prefix+"s")
	d, err := New(Options{NetNS: ns.Path()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	start := time.Now()
	if err := d.Apply(context.Background(), dataplane.Desired{State: st, Set: set, Attachments: atts}); err != nil {
		t.Fatal(err)
	}
	load := time.Since(start)
	t.Logf("%s %d rules: first load %d elements in %v; %+v", shape, n, sum(d.last), load.Round(time.Millisecond), d.phases)
	t.Logf("elements per map: %s", perMap(d.last))
}
