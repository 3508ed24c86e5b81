package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent/client"
)

// startAgent runs `bulkhead agent --standalone` in-process with the
// userspace dataplane and returns its --agent target.
func startAgent(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bhag")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "run", "agent.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() {
		done <- runWith(ctx, []string{"agent", "--standalone", "--socket", sock, "--state-dir", filepath.Join(dir, "state"),
			"--host", "h1", "--dataplane", "userspace", "--log-level", "warn"}, nil, &bytes.Buffer{}, &errb)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("agent exited %d: %s", code, errb.String())
			}
		case <-time.After(10 * time.Second):
			t.Error("the agent did not stop")
		}
	})
	c, _ := client.New(sock)
	for range 200 {
		if _, err := c.Health(context.Background()); err == nil {
			return "unix://" + sock
		}
		select {
		case code := <-done:
			t.Fatalf("agent exited %d: %s", code, errb.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("the agent did not come up: %s", errb.String())
	return ""
}

func runIn(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runWith(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestApplyGetDeleteAgainstAnAgent(t *testing.T) {
	target := startAgent(t)
	code, out, errs := run(t, "--agent", target, "apply", "-f", policies)
	if code != 0 || !strings.Contains(out, "Policy trading/buy-db created") || !strings.Contains(out, "enforced in ") || !strings.Contains(out, "(revision 1)") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = run(t, "--agent", target, "apply", "-f", policies)
	if code != 0 || !strings.Contains(out, "Segment buy-side unchanged") || !strings.Contains(out, "nothing to change (revision 1)") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	code, out, _ = run(t, "--agent", target, "get", "policies")
	if code != 0 || !strings.Contains(out, "KIND") || !strings.Contains(out, "Policy         trading    buy-db") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	// -o yaml is a List that apply reads back.
	code, out, _ = run(t, "--agent", target, "get", "segments", "-o", "yaml")
	if code != 0 || !strings.HasPrefix(out, "apiVersion: v1\n") || strings.Count(out, "kind: Segment") != 6 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	code, again, errs := runIn(t, out, "--agent", target, "apply", "-f", "-")
	if code != 0 || strings.Count(again, "unchanged") != 6 {
		t.Fatalf("exit %d\n%s%s", code, again, errs)
	}
	code, out, _ = run(t, "--agent", target, "delete", "-f", policies+"/30-payments.yaml")
	if code != 0 || !strings.Contains(out, "Policy payments/processor deleted") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	code, out, _ = run(t, "--agent", target, "get", "policies", "-o", "json")
	var l struct{ Items []map[string]any }
	if code != 0 || json.Unmarshal([]byte(out), &l) != nil || len(l.Items) != 4 {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

func TestApplyErrorsNamePlaces(t *testing.T) {
	target := startAgent(t)
	if code, _, errs := run(t, "--agent", target, "apply", "-f", policies); code != 0 {
		t.Fatal(errs)
	}
	// Workloads first, so that the wall prover sees them.
	c, _ := client.New(target)
	for _, w := range []api.WorkloadRegistration{
		{Namespace: "trading", Name: "buy-signal", Labels: map[string]string{"role": "buy-signal", "side": "buy"}, IPs: []string{"10.10.1.10"}, Interface: "bh1"},
		{Namespace: "trading", Name: "sell-db", Labels: map[string]string{"role": "database", "side": "sell"}, IPs: []string{"10.10.2.20"}, Interface: "bh2",
			Ports: []api.NamedPort{{Name: "postgres", Port: 5432, Protocol: "TCP"}}},
	} {
		if _, err := c.RegisterWorkload(context.Background(), w); err != nil {
			t.Fatal(err)
		}
	}
	code, _, errs := run(t, "--agent", target, "apply", "-f", "../../examples/breach.yaml")
	if code != 1 || !strings.Contains(errs, `wall "buy-sell" breached`) || !strings.Contains(errs, "examples/breach.yaml:11:7") {
		t.Fatalf("exit %d\n%s", code, errs)
	}
	bad := "apiVersion: bulkhead.dev/v1\nkind: Wall\nmetadata: {name: w}\nspec: {segments: [buy-side, nowhere]}\n"
	code, _, errs = runIn(t, bad, "--agent", target, "apply", "-f", "-")
	if code != 1 || !strings.Contains(errs, `(stdin):1:1: spec.segments[1]: segment "nowhere" does not exist`) {
		t.Fatalf("exit %d\n%s", code, errs)
	}
	code, out, _ := run(t, "--agent", target, "get", "workloads")
	if code != 0 || !strings.Contains(out, "registered on bh1: 10.10.1.10") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	code, out, _ = run(t, "--agent", target, "explain", "trading/buy-signal", "trading/sell-db", "--port", "5432/tcp")
	if code != 0 || !strings.Contains(out, "DENY") || !strings.Contains(out, `wall "buy-sell"`) {
		t.Fatalf("exit %d\n%s", code, out)
	}
	code, out, _ = run(t, "--agent", target, "explain", "trading/buy-signal", "10.10.2.20", "--port", "5432", "-o", "json")
	var r struct{ Verdict, Wall string }
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Verdict != "deny" || r.Wall != "buy-sell" {
		t.Fatalf("exit %d\n%s", code, out)
	}
	code, out, _ = run(t, "--agent", target, "agent", "status")
	if code != 0 || !strings.Contains(out, "host:      h1") || !strings.Contains(out, "workloads: 2") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	code, out, _ = run(t, "--agent", target, "agent", "counters")
	if code != 0 || !strings.Contains(out, "WHAT") || !strings.Contains(out, "spoofed") {
		t.Fatalf("agent counters: exit %d\n%s", code, out)
	}
}

func TestAgentFromTheEnvironment(t *testing.T) {
	target := startAgent(t)
	t.Setenv("BULKHEAD_AGENT", target)
	if code, out, errs := run(t, "apply", "-f", policies, "--dry-run"); code != 0 || !strings.Contains(out, "(dry run) Policy trading/buy-db created") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	if code, out, _ := run(t, "get"); code != 0 || !strings.Contains(out, "nothing here (revision 0)") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

func TestNoAgentIsClear(t *testing.T) {
	code, _, errs := run(t, "--agent", "unix:///nonexistent/bhag.sock", "get")
	if code != 1 || !strings.Contains(errs, "no agent at unix:///nonexistent/bhag.sock: is `bulkhead agent --standalone` running?") {
		t.Fatalf("exit %d\n%s", code, errs)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"agent"}, "give --standalone (no manager: objects come on the socket) or --manager URL"},
		{[]string{"agent", "--standalone", "--dataplane", "magic"}, `--dataplane "magic": valid:`},
		{[]string{"apply"}, "no file given"},
		{[]string{"get", "gadgets"}, `unknown kind "gadgets"`},
		{[]string{"explain", "a/b"}, "give both FROM and TO"},
	} {
		if code, _, errs := run(t, tc.args...); code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, %q; want %q", tc.args, code, errs, tc.want)
		}
	}
}
