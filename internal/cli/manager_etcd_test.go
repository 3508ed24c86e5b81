package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/manager"
	"github.com/bulkhead-dev/bulkhead/internal/store/etcdstore"
	"github.com/bulkhead-dev/bulkhead/internal/store/etcdstore/etcdtest"
)

// A manager pointed at an etcd that does not answer exits within the
// dial timeout and says why, instead of waiting silently for ever.
func TestManagerWithoutEtcdFailsWithTheCause(t *testing.T) {
	url := etcdtest.Refused(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	code, out, errs := runManagerCLI(ctx, "manager", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--etcd", url)
	took := time.Since(start)
	if code == 0 || !strings.Contains(errs, "etcd at "+url) || !strings.Contains(errs, "connection refused") {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	if limit := etcdstore.DefaultDialTimeout + 2*time.Second; took > limit {
		t.Fatalf("the manager took %s to give up, want at most %s", took, limit)
	}
}

// The second manager over one etcd does not name an admin token file it
// did not write; the first one does.
func TestSecondManagerBanner(t *testing.T) {
	e, err := etcdtest.StartEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	banner := func(data string) string {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan string, 1)
		go func() {
			_, out, errs := runManagerCLI(ctx, "manager", "--data-dir", data, "--listen", "127.0.0.1:0", "--etcd", e.Endpoint)
			done <- out + errs
		}()
		waitURL(t, data)
		cancel()
		select {
		case out := <-done:
			return out
		case <-time.After(10 * time.Second):
			t.Fatal("the manager did not stop")
		}
		return ""
	}
	first, second := filepath.Join(t.TempDir(), "m1"), filepath.Join(t.TempDir(), "m2")
	out := banner(first)
	if !strings.Contains(out, "admin token: "+filepath.Join(first, manager.AdminTokenFile)) {
		t.Fatalf("first manager's banner: %s", out)
	}
	// Managers over one store share the manager key (docs/manager.md, HA).
	key, err := os.ReadFile(filepath.Join(first, manager.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(second, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(second, manager.KeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	out = banner(second)
	if strings.Contains(out, filepath.Join(second, manager.AdminTokenFile)) || !strings.Contains(out, "admin token: not in this data directory") {
		t.Fatalf("second manager's banner: %s", out)
	}
	if strings.Contains(out, `{"level"`) {
		t.Fatalf("a JSON log line of the etcd client in the manager's text log: %s", out)
	}
	if _, err := os.Stat(filepath.Join(second, manager.AdminTokenFile)); !os.IsNotExist(err) {
		t.Fatalf("the second manager wrote an admin token: %v", err)
	}
}
