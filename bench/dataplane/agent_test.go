package benchdataplane

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/agent/client"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// TestAgentProcess is not a test but the standalone agent that
// TestFigures starts by running this test binary again, so that the
// agent's memory is its own: agent.Run with the nftables dataplane
// programming the namespace BHBN_AGENT_NETNS, serving on
// BHBN_AGENT_DIR/agent.sock until SIGTERM.
func TestAgentProcess(t *testing.T) {
	dir := os.Getenv("BHBN_AGENT_DIR")
	if dir == "" {
		t.Skip("the agent process of TestFigures")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	dp, err := nft.New(nft.Options{NetNS: os.Getenv("BHBN_AGENT_NETNS")})
	if err != nil {
		t.Fatal(err)
	}
	err = agent.Run(ctx, agent.Options{StateDir: filepath.Join(dir, "state"), Socket: filepath.Join(dir, "agent.sock"),
		Host: BenchHost, Dataplane: dp, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatal(err)
	}
}

// agentProc is a running agent process.
type agentProc struct {
	cmd *exec.Cmd
	c   *client.Client
	log string // its log file
}

// startAgent runs the agent process for tp's host namespace and waits
// until it answers.
func startAgent(t *testing.T, tp *topo) *agentProc {
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestAgentProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "BHBN_AGENT_DIR="+dir, "BHBN_AGENT_NETNS="+tp.host.Path())
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done); logf.Close() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	c, err := client.New(filepath.Join(dir, "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := c.Health(context.Background()); err == nil {
			return &agentProc{cmd: cmd, c: c, log: logf.Name()}
		} else if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("agent did not answer within 30 s: %v\n%s", err, log)
		}
	}
}

// memory is the agent's heap in use (as it reports it) and its resident
// set, now and at its peak, from /proc.
func (p *agentProc) memory(ctx context.Context) (heap, rss, peak uint64, err error) {
	st, err := p.c.Status(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, 0, 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && (f[0] == "VmRSS:" || f[0] == "VmHWM:") {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			if f[0] == "VmRSS:" {
				rss = kb << 10
			} else {
				peak = kb << 10
			}
		}
	}
	return st.MemoryBytes, rss, peak, nil
}

func registration(name string, addr string, iface string) api.WorkloadRegistration {
	return api.WorkloadRegistration{Namespace: "bench", Name: name, IPs: []string{addr}, Interface: iface,
		Labels: map[string]string{"app": "bench-" + name, "tier": "api", "version": "v1"},
		Ports:  []api.NamedPort{{Name: "http", Port: ServerPort, Protocol: "tcp"}}}
}

// benchPolicy returns the test pair's policy of s.
func benchPolicy(s *policy.Set) *policy.Policy {
	for _, p := range s.Policies {
		if p.Namespace == "bench" && p.Name == "bench-server" {
			return p
		}
	}
	return nil
}

// measureAgent starts a standalone agent for a fresh topology, registers
// the test pair, and times `apply` of a one-rule change over the socket
// until the kernel enforces it: first with nothing else applied, then
// holding s. It reports the agent's memory at both points.
func measureAgent(t *testing.T, s *policy.Set, report *strings.Builder, x *extraFigures) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cfg := config{name: "agent", tp: newTopo(t, figuresPrefix, "agent"), enforce: true}
	p := startAgent(t, cfg.tp)
	for _, r := range []api.WorkloadRegistration{registration("client", ClientAddr.String(), cfg.tp.clientIf),
		registration("server", ServerAddr.String(), cfg.tp.serverIf)} {
		if _, err := p.c.RegisterWorkload(ctx, r); err != nil {
			t.Fatalf("agent: register %s: %v", r.Name, err)
		}
	}
	pair := &policy.Set{Namespaces: []*policy.Namespace{{Name: "bench", Labels: map[string]string{"team": "t00", "env": "prod"}}},
		Policies: []*policy.Policy{benchPolicy(s)}}
	if _, err := p.c.Apply(ctx, api.ApplyRequest{Documents: []api.Document{{Name: "pair.yaml", Data: documents(pair)}}}); err != nil {
		t.Fatalf("agent: apply the pair's policy: %v", err)
	}
	x.applyEnforcedSmall = agentOneRule(t, ctx, p, cfg, s, "test pair only", report)
	h, r, pk, err := p.memory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(report, "agent memory, test pair only: heap in use %d MiB, RSS %d MiB (peak %d MiB)\n", h>>20, r>>20, pk>>20)

	// The generator's random allow rules breach its wall here and there;
	// the agent rightly refuses such a set whole, so it gets none.
	big := *s
	big.Walls = nil
	big.Workloads = slices.DeleteFunc(slices.Clone(s.Workloads), func(w *policy.Workload) bool { return w.Namespace == "bench" })
	docs := documents(&big)
	start := time.Now()
	res, err := p.c.Apply(ctx, api.ApplyRequest{Documents: chunks("bench", docs, 16<<20)}) // one document may hold 64 MiB
	if err != nil {
		fmt.Fprintf(report, "agent: NOT MEASURED: apply of %d rules failed after %v: %v\n", CountRules(s), time.Since(start).Round(time.Millisecond), err)
		t.Errorf("agent: apply %d rules: %v", CountRules(s), err)
		return
	}
	fmt.Fprintf(report, "agent: apply of %d rules and %d workloads (%d MiB of documents) enforced after %v (agent's own figure %v)\n",
		CountRules(s), len(big.Workloads), len(docs)>>20, time.Since(start).Round(time.Millisecond), time.Duration(res.EnforcedMicros)*time.Microsecond)
	seen := len(p.changes())
	x.applyEnforced = agentOneRule(t, ctx, p, cfg, s, sizeName(CountRules(s))+" rules", report)
	if ch := p.changes(); len(ch) > seen {
		fmt.Fprintf(report, "agent holding %s rules, where a one-rule apply goes (medians of the agent's log): %s\n",
			sizeName(CountRules(s)), phases(ch[seen:]))
	}
	if x.agentHeap, x.agentRSS, pk, err = p.memory(ctx); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(report, "agent memory holding %s rules: heap in use %d MiB, RSS %d MiB (peak %d MiB)\n",
		sizeName(CountRules(s)), x.agentHeap>>20, x.agentRSS>>20, pk>>20)
}

// agentOneRule applies the pair's policy with and without port 9, in
// turn, at most 10 times or for 2 minutes, timing each call from the
// request to its answer, which the agent sends once the kernel enforces
// the change; the first two are also checked with a connection.
func agentOneRule(t *testing.T, ctx context.Context, p *agentProc, cfg config, s *policy.Set, what string, report *strings.Builder) time.Duration {
	var times, own []time.Duration
	deadline := time.Now().Add(2 * time.Minute)
	for i := 0; i < 10 && time.Now().Before(deadline); i++ {
		allow9 := i%2 == 0
		pol := benchPolicy(s)
		if allow9 {
			pol = benchPolicy(withPort9(s, true))
		}
		doc := api.Document{Name: "bench-server.yaml", Data: documents(&policy.Set{Policies: []*policy.Policy{pol}})}
		start := time.Now()
		res, err := p.c.Apply(ctx, api.ApplyRequest{Documents: []api.Document{doc}})
		if err != nil {
			t.Fatalf("agent: apply one rule (%s): %v", what, err)
		}
		times = append(times, time.Since(start))
		own = append(own, time.Duration(res.EnforcedMicros)*time.Microsecond)
		if i < 2 {
			checkPort9(t, cfg, allow9)
		}
	}
	med := func(ds []time.Duration) time.Duration { ds = slices.Clone(ds); slices.Sort(ds); return ds[len(ds)/2] }
	fmt.Fprintf(report, "agent holding %s: apply of one changed rule → enforced: median %v over %d (min %v, max %v); agent's own figure median %v\n",
		what, med(times), len(times), slices.Min(times), slices.Max(times), med(own))
	return med(times)
}

// changes returns the agent's log records of applied changes ("objects
// changed"): each carries how long reading, validating, compiling and the
// dataplane took.
func (p *agentProc) changes() []string {
	b, _ := os.ReadFile(p.log)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `msg="objects changed"`) {
			out = append(out, l)
		}
	}
	return out
}

// phases gives the median of each duration the records carry.
func phases(records []string) string {
	keys := []string{"read", "validate", "compile", "dataplane", "enforced"}
	var parts []string
	for _, k := range keys {
		var ds []time.Duration
		for _, r := range records {
			for _, f := range strings.Fields(r) {
				if v, ok := strings.CutPrefix(f, k+"="); ok {
					if d, err := time.ParseDuration(v); err == nil {
						ds = append(ds, d)
					}
				}
			}
		}
		if len(ds) > 0 {
			parts = append(parts, fmt.Sprintf("%s %v", k, median(ds).Round(100*time.Microsecond)))
		}
	}
	return strings.Join(parts, ", ")
}
