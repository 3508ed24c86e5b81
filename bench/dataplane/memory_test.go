package benchdataplane

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	benchcompile "github.com/bulkhead-dev/bulkhead/bench/compile"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// TestAgentMemory measures what a standalone agent holds (issue 8, "Memory
// and latency at full scale") without the kernel: the in-process agent
// with a dataplane that enforces nothing, holding the generated set of
// N rules and N workloads (as Workload objects, like TestFigures'
// agent), for N = 10k, 30k, 100k. For each it reports the live heap after
// a GC, the process's RSS, and apply → enforced of one changed policy
// (median of 10, with the agent's own split), and writes a heap profile
// and its `go tool pprof -top` to BULKHEAD_BENCH_MEM_DIR (default: the
// test's temp dir). Run
//
//	BULKHEAD_BENCH_MEM=1 go test ./bench/dataplane -run TestAgentMemory -v -timeout 60m
//
// BULKHEAD_BENCH_MEM_SIZES=10000,30000 picks the sizes.
func TestAgentMemory(t *testing.T) {
	if os.Getenv("BULKHEAD_BENCH_MEM") == "" {
		t.Skip("set BULKHEAD_BENCH_MEM=1 to measure the agent's memory at scale")
	}
	sizes := []int{10_000, 30_000, 100_000}
	if v := os.Getenv("BULKHEAD_BENCH_MEM_SIZES"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, n)
		}
	}
	out := os.Getenv("BULKHEAD_BENCH_MEM_DIR")
	if out == "" {
		out = t.TempDir()
	}
	for _, n := range sizes {
		t.Run(fmt.Sprint(n), func(t *testing.T) { measureMemory(t, n, out) })
	}
}

func measureMemory(t *testing.T, n int, out string) {
	ctx := context.Background()
	base := liveHeap() // before the documents, which the agent keeps
	sh := benchcompile.Shape{Workloads: n, Namespaces: max(n/200, 5), Hosts: max(n/100, 1), Rules: n, Seed: 1}
	s := Generate(sh)
	s.Walls = nil // the generator's random rules breach its walls; the agent would refuse them
	pol := benchPolicy(s)
	docs := documents(s)
	nrules, nwl, docBytes := CountRules(s), len(s.Workloads), len(docs)
	s = nil

	var logBuf syncBuffer
	a, err := agent.Start(ctx, agent.Options{StateDir: filepath.Join(t.TempDir(), "state"), Host: BenchHost,
		Dataplane: nullDataplane{}, Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	start := time.Now()
	if _, err := a.Apply(ctx, api.ApplyRequest{Documents: chunks("bench", docs, 16<<20)}); err != nil {
		t.Fatalf("apply %d rules: %v", nrules, err)
	}
	first := time.Since(start)
	docs = ""
	// The loop compacts its journal after answering; a change that
	// changes nothing is answered after that, so the heap is measured at
	// rest.
	same := api.Document{Name: "bench-server.yaml", Data: documents(&policy.Set{Policies: []*policy.Policy{pol}})}
	if res, err := a.Apply(ctx, api.ApplyRequest{Documents: []api.Document{same}}); err != nil || len(res.Unchanged) != 1 {
		t.Fatalf("apply the same policy again: %+v %v", res, err)
	}
	heap := liveHeap() - base
	rss, hwm := procMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("runtime: heap in use %d MiB (of spans), idle not released %d MiB, stacks %d MiB, other runtime %d MiB",
		ms.HeapInuse>>20, (ms.HeapIdle-ms.HeapReleased)>>20, ms.StackInuse>>20, (ms.Sys-ms.HeapSys-ms.StackSys)>>20)
	writeHeapProfile(t, filepath.Join(out, fmt.Sprintf("agent-heap-%d", n)))

	var times, own []time.Duration
	logBuf.Reset()
	if cpu := os.Getenv("BULKHEAD_BENCH_MEM_CPU"); cpu != "" {
		f, err := os.Create(filepath.Join(out, fmt.Sprintf("agent-cpu-%d.pprof", n)))
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	for i := range 10 {
		p := benchPolicy(withPort9(&policy.Set{Policies: []*policy.Policy{pol}}, i%2 == 0))
		doc := api.Document{Name: "bench-server.yaml", Data: documents(&policy.Set{Policies: []*policy.Policy{p}})}
		t0 := time.Now()
		res, err := a.Apply(ctx, api.ApplyRequest{Documents: []api.Document{doc}})
		if err != nil || len(res.Updated) != 1 {
			t.Fatalf("apply one change: %v %v", res, err)
		}
		times = append(times, time.Since(t0))
		own = append(own, time.Duration(res.EnforcedMicros)*time.Microsecond)
	}
	var records []string
	for _, l := range strings.Split(logBuf.String(), "\n") {
		if strings.Contains(l, `msg="objects changed"`) {
			records = append(records, l)
		}
	}
	t.Logf("agent memory holding %d rules and %d workloads (%d MiB of documents): live heap %d MiB (%d B per workload+rule), RSS %d MiB (peak %d MiB); first apply %v",
		nrules, nwl, docBytes>>20, heap>>20, heap/uint64(nrules+nwl), rss>>20, hwm>>20, first.Round(time.Millisecond))
	t.Logf("agent holding %d rules: apply of one changed policy → enforced: median %v (min %v, max %v); agent's own figure median %v; split: %s",
		nrules, median(times), slices.Min(times), slices.Max(times), median(own), phases(records))
}

// chunks cuts a stream of documents ("---" lines) into documents of at
// most about size bytes each, below the agent's bound on one document.
func chunks(name, docs string, size int) []api.Document {
	var out []api.Document
	for len(docs) > 0 {
		end := len(docs)
		if end > size {
			end = size + strings.Index(docs[size:], "\n---\n") + 1
			if end <= size {
				end = len(docs)
			}
		}
		out = append(out, api.Document{Name: fmt.Sprintf("%s-%d.yaml", name, len(out)), Data: docs[:end]})
		docs = docs[end:]
	}
	return out
}

// nullDataplane enforces nothing: the agent alone is measured.
type nullDataplane struct{}

func (nullDataplane) Apply(context.Context, dataplane.Desired) error { return nil }
func (nullDataplane) Counters(context.Context) (dataplane.Counters, error) {
	return dataplane.Counters{}, nil
}
func (nullDataplane) Close() error { return nil }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
func (s *syncBuffer) Reset()         { s.mu.Lock(); defer s.mu.Unlock(); s.b.Reset() }

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// procMemory is this process's resident set, now and at its peak.
func procMemory() (rss, hwm uint64) {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && (f[0] == "VmRSS:" || f[0] == "VmHWM:") {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			if f[0] == "VmRSS:" {
				rss = kb << 10
			} else {
				hwm = kb << 10
			}
		}
	}
	return rss, hwm
}

// writeHeapProfile writes the heap profile to path.pprof and, if the go
// tool is there, its top by space in use to path.txt.
func writeHeapProfile(t *testing.T, path string) {
	f, err := os.Create(path + ".pprof")
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Logf("heap profile: %s.pprof (go tool pprof -top -sample_index=inuse_space)", path)
}
