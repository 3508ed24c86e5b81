package benchmanager

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

// childEnv makes the test binary run a manager (TestMain), so that the
// manager's memory and CPU are measured apart from the simulated agents.
const childEnv = "BHUP_BENCH_MANAGER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(runChild(dir))
	}
	os.Exit(m.Run())
}

func runChild(dir string) int {
	st, err := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer st.Close()
	m, err := manager.Start(context.Background(), manager.Config{Store: st, DataDir: dir, Listen: "127.0.0.1:0",
		Heartbeat: time.Second, SlowReaderCutoff: 60 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer m.Close()
	// BULKHEAD_BENCH_PROFILE=FILE: a CPU profile of the manager, written
	// when the test stops it (SIGTERM), before the manager closes.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	if path := os.Getenv("BULKHEAD_BENCH_PROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	<-stop
	// BULKHEAD_BENCH_HEAP=FILE: what the manager's heap holds at the end.
	if path := os.Getenv("BULKHEAD_BENCH_HEAP"); path != "" {
		if f, err := os.Create(path); err == nil {
			runtime.GC()
			_ = pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	return 0
}

// env sizes: BULKHEAD_AGENTS (default 1000), BULKHEAD_WORKLOADS (100000),
// BULKHEAD_POLICIES (1000, of 10 rules each).
func size(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

type sim struct {
	host     string
	c        *client.Client
	mu       sync.Mutex
	at       map[int64]time.Time // when its "rev" line arrived
	realized map[int64]time.Time // when the manager answered its status report
}

// TestScale runs a manager in a child process with simulated agents:
// each a real API client on its own TLS connection that joined with a
// join token, reported its workloads, follows the feed and reports the
// revision it realized, as internal/agent/feed does. BULKHEAD_LONG=1.
func TestScale(t *testing.T) {
	if os.Getenv("BULKHEAD_LONG") == "" {
		t.Skip("set BULKHEAD_LONG=1 for the manager scale benchmark")
	}
	agents, workloads, policies := size("BULKHEAD_AGENTS", 1000), size("BULKHEAD_WORKLOADS", 100000), size("BULKHEAD_POLICIES", 1000)
	ctx := context.Background()
	dir := t.TempDir()
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"="+dir)
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// SIGTERM lets the child write its profile; then it must go.
		_ = child.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { child.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			child.Process.Kill()
			<-done
		}
	})
	url, ca, token := waitManager(t, dir)
	admin, err := client.New(client.Config{URL: url, CA: ca, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	usage := func(what string) {
		rss, cpu := procUsage(child.Process.Pid)
		_, agentsCPU := procUsage(os.Getpid())
		t.Logf("manager after %s: RSS %d MiB, CPU %.1f s (the simulated agents' process: %.1f s)", what, rss>>20, cpu.Seconds(), agentsCPU.Seconds())
	}

	// Join.
	t0 := time.Now()
	sims := make([]*sim, agents)
	parallel(agents, 16, func(i int) error {
		host := fmt.Sprintf("sim-%04d", i)
		jt, err := admin.CreateJoinToken(ctx, host, time.Hour)
		if err != nil {
			return err
		}
		creds, err := client.Join(ctx, url, ca, "", jt.Secret, host)
		if err != nil {
			return err
		}
		c, err := creds.Client(url)
		if err != nil {
			return err
		}
		sims[i] = &sim{host: host, c: c, at: map[int64]time.Time{}, realized: map[int64]time.Time{}}
		return nil
	}, t)
	t.Logf("%d agents joined in %s", agents, time.Since(t0).Round(time.Millisecond))

	// Report: workloads/agents each, as one PUT.
	t0 = time.Now()
	var (
		repMu   sync.Mutex
		reps    []time.Duration
		retries atomic.Int64
	)
	per := workloads / agents
	parallel(agents, 32, func(i int) error {
		ws := make([]api.HostWorkload, per)
		for j := range ws {
			n := i*per + j
			ws[j] = api.HostWorkload{Namespace: fmt.Sprintf("app%d", n%50), Name: fmt.Sprintf("w%d", n),
				Labels: map[string]string{"app": fmt.Sprintf("a%d", n%policies)},
				IPs:    []string{netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}).String()}}
		}
		r0 := time.Now()
		// As internal/agent/feed does: a report the manager asks to try
		// again (503: identity allocation kept racing) is retried.
		var err error
		for attempt := range 20 {
			if _, err = sims[i].c.ReportWorkloads(ctx, sims[i].host, ws, nil, true); err == nil || !retryable(err) {
				break
			}
			retries.Add(1)
			time.Sleep(client.Backoff(attempt))
		}
		repMu.Lock()
		reps = append(reps, time.Since(r0))
		repMu.Unlock()
		return err
	}, t)
	t.Logf("%d workloads reported by %d agents in %s; a report of %d: %s; %d retried after a 503", agents*per, agents,
		time.Since(t0).Round(time.Millisecond), per, quantiles(reps), retries.Load())
	usage("the reports")

	// The 10,000-rule set.
	set := policySet(policies, 10)
	if os.Getenv("BULKHEAD_WALL") != "" {
		// A wall to prove on every apply, over every reported workload.
		set = wallSet + set
	}
	t0 = time.Now()
	res, err := admin.Apply(ctx, api.ManagerApplyRequest{Documents: []api.Document{{Name: "set.yaml", Data: set}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("apply of %d policies × 10 rules (%d KiB) with %d workloads reported, wall %v: %s", policies, len(set)>>10,
		agents*per, os.Getenv("BULKHEAD_WALL") != "", time.Since(t0).Round(time.Millisecond))
	usage("the apply")

	// Follow from the head, as agents that hold the state resume.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	ready := make(chan struct{}, agents)
	for _, s := range sims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := true
			s.c.Watch(wctx, res.Revision+1, func(ev api.FeedEvent) error {
				switch ev.Type {
				case api.FeedHeartbeat:
					if first {
						first = false
						ready <- struct{}{}
					}
				case api.FeedRev:
					s.mu.Lock()
					s.at[ev.Rev] = time.Now()
					s.mu.Unlock()
					// Realized, as a real agent reports it after its Apply.
					go func() {
						if s.c.ReportStatus(wctx, s.host, api.HostStatus{Realized: ev.Rev, Health: "ok"}) == nil {
							s.mu.Lock()
							s.realized[ev.Rev] = time.Now()
							s.mu.Unlock()
						}
					}()
				}
				return nil
			})
		}()
	}
	for range agents {
		select {
		case <-ready:
		case <-time.After(60 * time.Second):
			t.Fatal("the watches did not all start within 60 s")
		}
	}
	usage(fmt.Sprintf("%d watches open", agents))

	// Rounds: one policy changed (its document alone, as `bulkhead apply
	// -f one.yaml` sends it). Each agent's times are from the apply
	// request to its "rev" line (seen) and to the answer to its status
	// report (realized: the manager knows it). First rounds answered at
	// commit, then rounds with apply --wait, which answer once every
	// agent has realized the revision.
	var seen, realized, committed, allRealized, waited []time.Duration
	round := func(i int, wait bool) {
		one := fmt.Sprintf("apiVersion: bulkhead.dev/v1\nkind: Policy\nmetadata: {name: p0, namespace: app0}\nspec:\n  appliesTo: {selector: {matchLabels: {app: a0}}}\n  ingress:\n    - {name: r0, action: allow, from: [{selector: {matchLabels: {app: a1}}}], services: [{protocol: tcp, port: %d}]}\n", 3000+i)
		req := api.ManagerApplyRequest{Documents: []api.Document{{Name: "one.yaml", Data: one}}}
		if wait {
			req.Wait = "60s"
		}
		t0 := time.Now()
		r, err := admin.Apply(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		answered := time.Since(t0)
		if wait {
			if len(r.NotRealized) > 0 {
				t.Fatalf("round %d: apply --wait: %d agents did not realize revision %d", i, len(r.NotRealized), r.Revision)
			}
			waited = append(waited, answered)
		} else {
			committed = append(committed, answered)
		}
		var last time.Duration
		for _, s := range sims {
			var at, done time.Time
			for end := time.Now().Add(60 * time.Second); at.IsZero() || done.IsZero(); time.Sleep(time.Millisecond) {
				s.mu.Lock()
				at, done = s.at[r.Revision], s.realized[r.Revision]
				s.mu.Unlock()
				if time.Now().After(end) {
					t.Fatalf("round %d: %s did not see and realize revision %d", i, s.host, r.Revision)
				}
			}
			seen, realized = append(seen, at.Sub(t0)), append(realized, done.Sub(t0))
			last = max(last, done.Sub(t0))
		}
		allRealized = append(allRealized, last)
		t.Logf("round %d (wait %v): revision %d answered in %s, realized by all %d agents in %s", i, wait, r.Revision,
			answered.Round(time.Millisecond), agents, last.Round(time.Millisecond))
	}
	for i := range 5 {
		round(i, false)
	}
	for i := range 10 {
		round(5+i, true)
	}
	t.Logf("apply of one changed policy answered: %s", quantiles(committed))
	t.Logf("the change seen by each agent (%d samples): %s", len(seen), quantiles(seen))
	t.Logf("the change realized by each agent (its status report answered; %d samples): %s", len(realized), quantiles(realized))
	t.Logf("the change realized by every agent (the last status report answered; %d rounds): %s", len(allRealized), quantiles(allRealized))
	t.Logf("apply --wait of one changed policy answered (every agent realized; %d rounds): %s", len(waited), quantiles(waited))
	// The whole 10,000-rule set again with one rule changed.
	t0 = time.Now()
	r, err := admin.Apply(ctx, api.ManagerApplyRequest{Documents: []api.Document{{Name: "set.yaml",
		Data: strings.Replace(set, "port: 1001}", "port: 2001}", 1)}}, Wait: "60s"})
	if err != nil || len(r.NotRealized) > 0 {
		t.Fatalf("whole set again: %v, not realized by %d", err, len(r.NotRealized))
	}
	t.Logf("the whole set again, one rule changed, apply --wait answered (every agent realized): %s", time.Since(t0).Round(time.Millisecond))
	usage("the rounds")
	cancel()
	wg.Wait()
}

func retryable(err error) bool {
	var e *client.Error
	return errors.As(err, &e) && e.Status == http.StatusServiceUnavailable
}

func waitManager(t *testing.T, dir string) (url string, ca []byte, token string) {
	t.Helper()
	for range 3000 {
		u, err1 := os.ReadFile(filepath.Join(dir, manager.URLFile))
		c, err2 := os.ReadFile(filepath.Join(dir, manager.CAFile))
		k, err3 := os.ReadFile(filepath.Join(dir, manager.AdminTokenFile))
		if err1 == nil && err2 == nil && err3 == nil {
			return strings.TrimSpace(string(u)), c, strings.TrimSpace(string(k))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the manager did not start")
	return "", nil, ""
}

// parallel runs fn(0..n-1) with at most width at once and fails t on
// the first error.
func parallel(n, width int, fn func(int) error, t *testing.T) {
	t.Helper()
	sem := make(chan struct{}, width)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(i); err != nil {
				errs <- fmt.Errorf("%d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func quantiles(d []time.Duration) string {
	if len(d) == 0 {
		return "no samples"
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	q := func(p float64) time.Duration { return d[min(len(d)-1, int(float64(len(d))*p))].Round(time.Millisecond) }
	return fmt.Sprintf("p50 %s, p99 %s, max %s", q(0.5), q(0.99), d[len(d)-1].Round(time.Millisecond))
}

// procUsage reads a process's resident memory and CPU time from /proc.
func procUsage(pid int) (rss uint64, cpu time.Duration) {
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				rss = kb << 10
			}
		}
	}
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		s := string(data)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(fields) > 12 {
			ut, _ := strconv.ParseUint(fields[11], 10, 64)
			st, _ := strconv.ParseUint(fields[12], 10, 64)
			cpu = time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
		}
	}
	return rss, cpu
}

// wallSet is a wall between two namespaces of the simulated workloads,
// which the policies hold: their peers are in their own namespace.
const wallSet = `apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: left}
spec: {namespaces: [app1], selector: {}}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: right}
spec: {namespaces: [app2], selector: {}}
---
apiVersion: bulkhead.dev/v1
kind: Wall
metadata: {name: left-right}
spec: {segments: [left, right]}
---
`

// policySet writes n policies of rules rules each over the simulated
// workloads' labels, with a default-deny baseline.
func policySet(n, rules int) string {
	var b strings.Builder
	b.WriteString(`apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: default-deny}
spec:
  tier: baseline
  appliesTo: {selector: {}}
  ingress: [{name: deny, action: deny}]
  egress: [{name: deny, action: deny}]
`)
	for i := range n {
		fmt.Fprintf(&b, "---\napiVersion: bulkhead.dev/v1\nkind: Policy\nmetadata: {name: p%d, namespace: app%d}\nspec:\n  appliesTo: {selector: {matchLabels: {app: a%d}}}\n  ingress:\n", i, i%50, i)
		for r := range rules {
			fmt.Fprintf(&b, "    - {name: r%d, action: allow, from: [{selector: {matchLabels: {app: a%d}}}], services: [{protocol: tcp, port: %d}]}\n", r, (i+r+1)%n, 1000+r)
		}
	}
	return b.String()
}
