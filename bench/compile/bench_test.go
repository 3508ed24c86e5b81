package benchcompile

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// cpuTime is the process's user+system CPU time: on a shared 2-vCPU VM
// wall time varies with steal, CPU time much less.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakHeap samples the live heap until stop is called.
func peakHeap() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return func() uint64 { close(done); <-finished; return peak.Load() }
}

func countRules(s *policy.Set) int {
	n := 0
	for _, p := range s.Policies {
		n += len(p.Ingress) + len(p.Egress)
	}
	return n
}

func report(t *testing.T, name string, st *compile.State, sz compile.Sizes) {
	s := st.Stats()
	t.Logf("%s: identities %d (addresses %d, outside ranges %d), classes ingress %v egress %v, groups %v, guards %d",
		name, s.Identities, s.Addrs, s.Ranges, sz.Classes[0], sz.Classes[1], sz.Groups, sz.Guards)
	t.Logf("%s: table keys ingress %d (by level 0,1,2,wildcard: %v; port ranges %d), egress %d (%v; port ranges %d); guard entries %d; outcomes %d; rule ids %d",
		name, s.Entries[0], s.ByLevel[0], s.PortRanges[0], s.Entries[1], s.ByLevel[1], s.PortRanges[1], s.Guards, s.Outcomes, s.Rules)
}

// TestFigures prints the figures recorded in docs/benchmarks.md. It takes about a
// minute, so it runs only with BULKHEAD_BENCH=1.
func TestFigures(t *testing.T) {
	if os.Getenv("BULKHEAD_BENCH") == "" {
		t.Skip("set BULKHEAD_BENCH=1")
	}
	set := Generate(Full)
	t.Logf("set: %d workloads, %d namespaces, %d policies, %d rules, %d segments",
		len(set.Workloads), len(set.Namespaces), len(set.Policies), countRules(set), len(set.Segments))
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	stop := peakHeap()
	cpu0 := cpuTime()
	start := time.Now()
	c, err := compile.New(set, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	st := c.State()
	took, cpu := time.Since(start), cpuTime()-cpu0
	peak := stop()
	t.Logf("full compile, all hosts: wall %v, cpu %v, peak heap %d MiB (set itself %d MiB)",
		took.Round(time.Millisecond), cpu.Round(time.Millisecond), peak>>20, before.HeapAlloc>>20)
	report(t, "all hosts", st, c.Sizes())

	start, cpu0 = time.Now(), cpuTime()
	hc, err := compile.New(set, "host-0001", nil)
	if err != nil {
		t.Fatal(err)
	}
	hst := hc.State()
	t.Logf("full compile, one host: wall %v, cpu %v", time.Since(start).Round(time.Millisecond), (cpuTime() - cpu0).Round(time.Millisecond))
	report(t, "host-0001", hst, hc.Sizes())

	st = incremental(t, c, st, set)
	changeTimes(t, c, st, set, 10)
}

// incremental times one-workload changes: relabel into an existing
// identity, relabel into a new one, delete, add; each with State and Diff.
func incremental(t *testing.T, c *compile.Compiler, st *compile.State, set *policy.Set) *compile.State {
	kinds := []string{"relabel to existing app", "relabel to new app", "delete", "add back"}
	times := make([][]time.Duration, len(kinds))
	sizes := make([][]int, len(kinds))
	for i := 0; i < 30; i++ {
		w := set.Workloads[(i*7919)%len(set.Workloads)]
		other := set.Workloads[(i*104729+13)%len(set.Workloads)]
		moved := *w
		moved.Labels = other.Labels
		fresh := *w
		fresh.Labels = map[string]string{"app": fmt.Sprintf("fresh%d", i), "tier": "api", "version": "v2"}
		steps := []func() error{
			func() error { return c.UpsertWorkload(&moved) },
			func() error { return c.UpsertWorkload(&fresh) },
			func() error { c.DeleteWorkload(w.Key()); return nil },
			func() error { return c.UpsertWorkload(w) },
		}
		for k, step := range steps {
			start := time.Now()
			if err := step(); err != nil {
				t.Fatal(err)
			}
			next := c.State()
			d := compile.Diff(st, next)
			times[k] = append(times[k], time.Since(start))
			sizes[k] = append(sizes[k], d.Len())
			st = next
		}
	}
	for k, name := range kinds {
		ts := times[k]
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		sort.Ints(sizes[k])
		t.Logf("incremental %-24s (upsert + State + Diff): median %v, max %v; delta elements median %d, max %d",
			name, ts[len(ts)/2].Round(time.Microsecond), ts[len(ts)-1].Round(time.Microsecond), sizes[k][len(ts)/2], sizes[k][len(ts)-1])
	}
	return st
}

func BenchmarkCompileFull(b *testing.B) {
	set := Generate(Full)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := compile.Compile(set, "", nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRelabelOne(b *testing.B) {
	set := Generate(Full)
	c, err := compile.New(set, "", nil)
	if err != nil {
		b.Fatal(err)
	}
	st := c.State()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w := *set.Workloads[(i*7919)%len(set.Workloads)]
		w.Labels = set.Workloads[(i*104729+13)%len(set.Workloads)].Labels
		if err := c.UpsertWorkload(&w); err != nil {
			b.Fatal(err)
		}
		next := c.State()
		_ = compile.Diff(st, next)
		st = next
	}
}
