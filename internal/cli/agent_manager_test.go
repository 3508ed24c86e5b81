package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// `bulkhead agent --manager` as an operator runs it, beside `bulkhead
// manager`, both in-process (the userspace dataplane: no root): it joins
// with a one-time token, enforces the manager's revision, is counted by
// `apply --wait`, refuses local applies, and restarts without a token.
func TestAgentFollowsManager(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(configEnv, filepath.Join(dir, "config.yaml"))
	t.Setenv(serverEnv, "")
	t.Setenv(tokenEnv, "")
	t.Setenv(agentEnv, "")
	data := filepath.Join(dir, "data")
	run := func(want int, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var out, errb bytes.Buffer
		if code := runWith(ctx, args, nil, &out, &errb); code != want {
			t.Fatalf("bulkhead %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out.String(), errb.String())
		}
		return out.String() + errb.String()
	}
	background := func(args ...string) func() {
		ctx, cancel := context.WithCancel(context.Background())
		var out, errb syncBuffer
		done := make(chan int, 1)
		go func() { done <- runWith(ctx, args, nil, &out, &errb) }()
		return func() {
			cancel()
			select {
			case code := <-done:
				if code != 0 {
					t.Errorf("bulkhead %s: exit %d: %s%s", args[0], code, out.String(), errb.String())
				}
			case <-time.After(15 * time.Second):
				t.Errorf("bulkhead %s did not stop", args[0])
			}
		}
	}
	stopManager := background("manager", "--data-dir", data, "--listen", "127.0.0.1:0")
	defer stopManager()
	url := waitURL(t, data)
	run(0, "login", "--server", url, "--ca", filepath.Join(data, "ca.crt"), "--token-file", filepath.Join(data, "admin.token"))
	if out := run(0, "apply", "-f", "../../examples/policies"); !strings.Contains(out, "Wall buy-sell created") {
		t.Fatalf("apply through the manager: %s", out)
	}
	out := run(0, "token", "create", "--join", "--host", "node-7")
	secret, hash := regexp.MustCompile(`bhj_\S+`).FindString(out), regexp.MustCompile(`sha256:\S+`).FindString(out)

	state, sock := filepath.Join(dir, "agent"), filepath.Join(dir, "agent.sock")
	agentArgs := []string{"agent", "--manager", url, "--dataplane", "userspace", "--state-dir", state, "--socket", sock,
		"--host", "node-7", "--log-level", "warn"}
	tokenFile := filepath.Join(dir, "join.token")
	if err := os.WriteFile(tokenFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stopAgent := background(append(agentArgs, "--join-token-file", tokenFile, "--ca-hash", hash)...)
	realized := regexp.MustCompile(`node-7\s+ok\s+[1-9]`)
	waitFor(t, 10*time.Second, "node-7 realized a revision", func() bool { return realized.MatchString(run(0, "get", "hosts")) })
	if out := run(0, "token", "list", "--join"); !regexp.MustCompile(`\S{16}\s+node-7\s+used`).MatchString(out) {
		t.Errorf("token list --join: %s", out)
	}
	if out := run(0, "--agent", "unix://"+sock, "get", "policies"); !strings.Contains(out, "buy-db") {
		t.Errorf("the agent does not hold the manager's policies:\n%s", out)
	}
	if out := run(1, "--agent", "unix://"+sock, "apply", "-f", "../../examples/policies"); !strings.Contains(out, "follows the manager") {
		t.Errorf("a local apply on a managed agent: %s", out)
	}
	stopAgent()

	// Restarted: the credentials are kept, no token needed; --wait counts it.
	stopAgent = background(agentArgs...)
	defer stopAgent()
	extra := filepath.Join(dir, "extra.yaml")
	if err := os.WriteFile(extra, []byte(`apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: extra, namespace: trading}
spec:
  appliesTo: {selector: {matchLabels: {role: buy-signal}}}
  egress: [{name: dns, action: allow, services: [{protocol: udp, port: 5353}]}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out = run(0, "apply", "-f", extra, "--wait", "10s")
	if !strings.Contains(out, "realized by 1 hosts: node-7") {
		t.Errorf("apply --wait: %s", out)
	}
}
