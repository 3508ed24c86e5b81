package cli

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
	"github.com/bulkhead-dev/bulkhead/internal/up"
)

// syncBuffer is a bytes.Buffer safe for concurrent writers and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls until cond holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("after %s: %s", d, what)
		}
	}
}

// `bulkhead up --demo` as a new user runs it, in a throwaway host
// namespace: it comes up, configures the CLI so that `bulkhead get
// workloads` works at once, shows allowed and denied connections with the
// kernel's records, and on Ctrl-C removes the demo and leaves the host's
// enforcement in place.
func TestUpDemo(t *testing.T) {
	nstest.RequireRoot(t)
	const demoPrefix = "bhupd-"
	for _, p := range []string{"bhupt", demoPrefix} {
		if err := netns.DeleteAll(p); err != nil {
			t.Fatal(err)
		}
	}
	host := nstest.NS(t, "bhupt")
	nstest.Run(t, host, "ip", "link", "set", "lo", "down") // as `ip netns add` leaves it
	dir := t.TempDir()
	t.Setenv(configEnv, filepath.Join(dir, "config.yaml"))
	t.Setenv(serverEnv, "")
	t.Setenv(tokenEnv, "")
	t.Setenv(agentEnv, "")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	start := time.Now()
	go func() {
		done <- runWith(ctx, []string{"up", "--demo", "--netns", host.Path(), "--data-dir", filepath.Join(dir, "data"),
			"--listen", "127.0.0.1:0", "--socket", filepath.Join(dir, "agent.sock"), "--host", "bhup-test",
			"--demo-prefix", demoPrefix, "--demo-every", "1s"}, nil, &out, &errb)
	}()
	waitFor(t, 30*time.Second, "up is ready:\n"+out.String()+errb.String(), func() bool {
		return strings.Contains(out.String(), "Connections as the demo's clients try them")
	})
	t.Logf("up --demo ready in %s", time.Since(start).Round(time.Millisecond))

	// Another terminal: the configuration up wrote.
	var gout, gerr bytes.Buffer
	if code := runWith(context.Background(), []string{"get", "workloads"}, nil, &gout, &gerr); code != 0 {
		t.Fatalf("get workloads: exit %d: %s", code, gerr.String())
	}
	for _, want := range []string{"bhup-test", "buy-signal", "sell-db", "payment-processor", "frontend"} {
		if !strings.Contains(gout.String(), want) {
			t.Errorf("get workloads:\n%s\nlacks %s", gout.String(), want)
		}
	}
	allowed := regexp.MustCompile(`allowed\s+trading/buy-signal\s+→ trading/buy-db:5432`)
	denied := regexp.MustCompile(`denied\s+trading/buy-signal\s+→ trading/sell-db:5432 .*\[kernel: wall buy-sell\]`)
	waitFor(t, 15*time.Second, "an allowed and a denied demo connection:\n"+out.String(), func() bool {
		s := out.String()
		return allowed.MatchString(s) && denied.MatchString(s)
	})
	if strings.Contains(out.String(), "UNEXPECTED") {
		t.Errorf("a demo connection went against the policy:\n%s", out.String())
	}
	// The demo's flows are kept by the manager, each denial with what
	// denied it: `bulkhead flows` in another terminal.
	var fout, ferr bytes.Buffer
	waitFor(t, 15*time.Second, "the demo's denials in bulkhead flows", func() bool {
		fout.Reset()
		ferr.Reset()
		if code := runWith(context.Background(), []string{"flows", "-o", "json"}, nil, &fout, &ferr); code != 0 {
			t.Fatalf("flows: exit %d: %s", code, ferr.String())
		}
		s := strings.Join(strings.Fields(fout.String()), "")
		return strings.Contains(s, `"verdict":"wall"`) && strings.Contains(s, `"rule":"buy-sell"`) &&
			strings.Contains(s, `"rule":"Policy/default-deny/egress/deny-all-egress"`)
	})
	// The demo's scan (buy-signal tries 30 ports of the processor) raises
	// a scan alert from the stored flows.
	var aout, aerr bytes.Buffer
	waitFor(t, 15*time.Second, "the demo's scan alert in bulkhead alerts", func() bool {
		aout.Reset()
		aerr.Reset()
		if code := runWith(context.Background(), []string{"alerts", "-o", "json"}, nil, &aout, &aerr); code != 0 {
			t.Fatalf("alerts: exit %d: %s", code, aerr.String())
		}
		return strings.Contains(aout.String(), "scan") && strings.Contains(aout.String(), "buy-signal")
	})
	waitFor(t, 5*time.Second, "the demo saying it scanned:\n"+out.String(), func() bool {
		return strings.Contains(out.String(), "scan     trading/buy-signal")
	})

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("up exited %d: %s", code, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("up did not stop")
	}
	if left, _ := filepath.Glob(filepath.Join(netns.Dir, demoPrefix+"*")); len(left) > 0 {
		t.Errorf("demo namespaces left: %v", left)
	}
	if got, err := exec.Command("ip", "netns", "exec", host.Name, "nft", "list", "tables").CombinedOutput(); err == nil &&
		!strings.Contains(string(got), "inet bulkhead") {
		t.Errorf("the host's enforcement went with up: nft list tables: %s", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "agent.sock")); err == nil {
		t.Error("the agent's socket is left")
	}
	if testing.Verbose() {
		t.Logf("output of up:\n%s", out.String())
	}
}

// Without the privileges it needs, up says exactly which.
func TestUpNeedsRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		if err := up.CheckPrivileges(); err != nil {
			t.Errorf("root: %v", err)
		}
		t.Skip("runs as root: the refusal is for other users")
	}
	var o, e bytes.Buffer
	code := runWith(context.Background(), []string{"up", "--demo"}, nil, &o, &e)
	if code != 1 || !strings.Contains(e.String(), "bulkhead up needs root (CAP_NET_ADMIN) to program nftables and create network namespaces") {
		t.Errorf("exit %d, stderr %q", code, e.String())
	}
}
