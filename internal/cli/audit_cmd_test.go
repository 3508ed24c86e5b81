package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/manager"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

// audit head and export keep the log's head outside the manager; verify
// --head finds the live log re-sealed behind it, and verify --log checks an
// export without the manager, finding any change to the file.
func TestAuditExportAndVerifyAgainstAHead(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(configEnv, filepath.Join(dir, "config.yaml"))
	t.Setenv(serverEnv, "")
	t.Setenv(tokenEnv, "")
	st, err := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := manager.Start(ctx, manager.Config{Store: st, DataDir: filepath.Join(dir, "data"), Listen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	run := func(want int, args ...string) string {
		t.Helper()
		code, out, errs := runManagerCLI(ctx, args...)
		if code != want {
			t.Fatalf("bulkhead %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out, errs)
		}
		return out + errs
	}
	run(0, "login", "--server", m.URL(), "--ca", filepath.Join(dir, "data", manager.CAFile), "--token-file", filepath.Join(dir, "data", manager.AdminTokenFile))
	for _, name := range []string{"alice", "bob", "carol"} {
		run(0, "token", "create", "--role", "auditor", name)
	}
	head, export := filepath.Join(dir, "head.json"), filepath.Join(dir, "export.json")
	if out := run(0, "audit", "head", "-o", head); !strings.Contains(out, "audit head 4:") {
		t.Fatalf("audit head: %s", out)
	}
	if out := run(0, "audit", "export", "-o", export); !strings.Contains(out, "4 audit entries") {
		t.Fatalf("audit export: %s", out)
	}
	run(0, "audit", "verify", "--head", head)
	run(0, "audit", "verify", "--head", export)
	run(0, "audit", "verify", "--log", export)

	// Someone with the store rewrites entry 2 and re-seals the rest.
	entries, err := audit.Read(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	prev := audit.Head{Seq: 1, Hash: entries[0].Hash}
	for _, e := range entries[1:] {
		if e.Seq == 2 {
			e.Object = "token/nobody"
		}
		e, _ = audit.Seal(prev, e)
		value, _ := json.Marshal(e)
		if _, _, err := st.Txn(ctx, nil, []store.Op{store.Put(fmt.Sprintf("audit/log/%020d", e.Seq), value)}); err != nil {
			t.Fatal(err)
		}
		prev = audit.Head{Seq: e.Seq, Hash: e.Hash}
	}
	headValue, _ := json.Marshal(prev)
	if _, _, err := st.Txn(ctx, nil, []store.Op{store.Put("audit/head", headValue)}); err != nil {
		t.Fatal(err)
	}
	if out := run(1, "audit", "verify", "--head", head); !strings.Contains(out, "rewritten up to here") {
		t.Fatalf("verify --head after re-sealing: %s", out)
	}
	run(0, "audit", "verify", "--log", export, "--head", head)

	// A changed export, or a changed head file, does not verify.
	data, _ := os.ReadFile(export)
	if err := os.WriteFile(export, []byte(strings.Replace(string(data), "token/alice", "token/eve", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := run(1, "audit", "verify", "--log", export); !strings.Contains(out, "BROKEN") {
		t.Fatalf("verify of a changed export: %s", out)
	}
	data, _ = os.ReadFile(head)
	if err := os.WriteFile(head, []byte(strings.Replace(string(data), `"seq": 4`, `"seq": 3`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := run(1, "audit", "verify", "--head", head); !strings.Contains(out, "signature does not verify") {
		t.Fatalf("verify against a changed head: %s", out)
	}
}
