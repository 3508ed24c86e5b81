package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// runManagerCLI runs a command line of the manager's commands, as root.go
// will once RegisterManagerCommands is wired in.
func runManagerCLI(ctx context.Context, args ...string) (int, string, string) {
	root := &cobra.Command{Use: "bulkhead", SilenceUsage: true, SilenceErrors: true}
	RegisterManagerCommands(root)
	serverTestCommands(root)
	var out, errb bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	err := root.ExecuteContext(ctx)
	var exit *ExitError
	switch {
	case err == nil:
		return 0, out.String(), errb.String()
	case errors.As(err, &exit):
		return exit.Code, out.String(), errb.String()
	}
	return 1, out.String(), errb.String() + err.Error()
}

// serverTestCommands stands in for apply and get with a manager named,
// which another file's commands call serverApply and serverGet for.
func serverTestCommands(root *cobra.Command) {
	var files []string
	var wait time.Duration
	apply := &cobra.Command{Use: "sapply", RunE: func(cmd *cobra.Command, _ []string) error {
		docs, err := readDocuments(files, cmd.InOrStdin())
		if err != nil {
			return err
		}
		return serverApply(cmd, docs, false, false, wait)
	}}
	apply.Flags().StringArrayVarP(&files, "filename", "f", nil, "")
	apply.Flags().DurationVar(&wait, "wait", 0, "")
	var output string
	get := &cobra.Command{Use: "sget", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		return serverGet(cmd, args[0], output)
	}}
	get.Flags().StringVarP(&output, "output", "o", "table", "")
	root.AddCommand(apply, get)
}

func TestManagerCommands(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(configEnv, filepath.Join(dir, "config.yaml"))
	t.Setenv(serverEnv, "")
	t.Setenv(tokenEnv, "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan string, 1)
	go func() {
		code, out, errs := runManagerCLI(ctx, "manager", "--data-dir", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0")
		done <- strings.Join([]string{string(rune('0' + code)), out, errs}, "\n")
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("the manager did not stop")
		}
	})
	data := filepath.Join(dir, "data")
	url := waitURL(t, data)

	run := func(want int, args ...string) string {
		t.Helper()
		c, cctx := context.WithTimeout(context.Background(), 20*time.Second)
		defer cctx()
		code, out, errs := runManagerCLI(c, args...)
		if code != want {
			t.Fatalf("bulkhead %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out, errs)
		}
		return out + errs
	}
	run(0, "login", "--server", url, "--ca", filepath.Join(data, "ca.crt"), "--token-file", filepath.Join(data, "admin.token"))
	if st, err := os.Stat(filepath.Join(dir, "config.yaml")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v", err)
	}
	out := run(0, "token", "create", "--role", "auditor", "alice")
	secret := regexp.MustCompile(`bh_\S+`).FindString(out)
	if secret == "" {
		t.Fatalf("no secret printed: %s", out)
	}
	out = run(0, "token", "create", "--join", "--host", "node-1")
	if !strings.Contains(out, "bhj_") || !strings.Contains(out, "CA hash: sha256:") {
		t.Fatalf("join token: %s", out)
	}
	out = run(0, "sapply", "-f", "../../examples/policies", "--wait", "100ms")
	if !strings.Contains(out, "Wall buy-sell created") || !strings.Contains(out, "revision ") {
		t.Fatalf("apply: %s", out)
	}
	out = run(0, "host", "bounds", "node-1", "--range", "10.1.0.0/24", "--namespace", "trading")
	if !strings.Contains(out, "ranges:     10.1.0.0/24") || !strings.Contains(out, "host IPs:   (no bound)") {
		t.Fatalf("host bounds: %s", out)
	}
	out = run(1, "host", "bounds", "node-2", "--range", "10.1.0.128/25")
	if !strings.Contains(out, "overlaps host node-1's range 10.1.0.0/24") {
		t.Fatalf("overlapping host bounds: %s", out)
	}
	out = run(0, "revisions")
	if !strings.Contains(out, "(head)") || !strings.Contains(out, "token:admin (admin)") {
		t.Fatalf("revisions: %s", out)
	}
	out = run(0, "revisions", "diff")
	if !strings.Contains(out, "created Wall buy-sell") {
		t.Fatalf("diff: %s", out)
	}
	out = run(0, "sget", "walls")
	if !strings.Contains(out, "Wall") || !strings.Contains(out, "buy-sell") {
		t.Fatalf("get walls: %s", out)
	}
	// What get prints applies back: a backup restores as it was.
	for _, format := range []string{"yaml", "json"} {
		backup := filepath.Join(dir, "backup."+format)
		if err := os.WriteFile(backup, []byte(run(0, "sget", "-o", format, "objects")), 0o600); err != nil {
			t.Fatal(err)
		}
		out = run(0, "sapply", "-f", backup)
		if strings.Contains(out, "created") || strings.Contains(out, "updated") || !strings.Contains(out, "unchanged") {
			t.Fatalf("apply of the %s backup changed something: %s", format, out)
		}
	}
	// The auditor reads and verifies, but cannot write.
	out = run(0, "--token", secret, "audit", "verify")
	if !strings.Contains(out, "audit log verified") {
		t.Fatalf("audit verify: %s", out)
	}
	out = run(1, "--token", secret, "token", "create", "bob")
	if !strings.Contains(out, "HTTP 403") {
		t.Fatalf("auditor creating a token: %s", out)
	}
	out = run(0, "audit", "log")
	if !strings.Contains(out, "policy.apply") {
		t.Fatalf("audit log: %s", out)
	}
}

// waitURL reads the URL the manager writes to its data directory once it
// listens (on port 0 here).
func waitURL(t *testing.T, data string) string {
	t.Helper()
	for range 500 {
		if b, err := os.ReadFile(filepath.Join(data, "url")); err == nil {
			return strings.TrimSpace(string(b))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the manager did not write its URL")
	return ""
}
