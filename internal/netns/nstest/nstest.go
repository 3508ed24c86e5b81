// Package nstest gives tests throwaway network namespaces, named with a
// prefix the test owns and removed by name when the test ends, even when
// it fails.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// InCI reports whether the tests run in CI, where a missing prerequisite
// fails a test instead of skipping it.
func InCI() bool { return os.Getenv("CI") == "true" }

// RequireRoot skips t (fails it in CI) unless the process can create
// network namespaces and program netfilter.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root to create network namespaces")
	}
}

// RequireCommand skips t (fails it in CI) unless name is on PATH.
func RequireCommand(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		Missing(t, "needs the command "+name)
	}
}

// Missing reports a missing prerequisite: a skip outside CI, a failure in it.
func Missing(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("prerequisite missing in CI: %s", reason)
	}
	t.Skipf("skipped: %s (in CI this fails)", reason)
}

// Name returns prefix followed by random hex, short enough for an
// interface name when prefix is at most 7 characters.
func Name(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// NS creates a namespace named prefix+random and removes it when t ends.
// The loopback interface is brought up.
func NS(t testing.TB, prefix string) *netns.NS {
	t.Helper()
	RequireRoot(t)
	n, err := netns.Create(Name(prefix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Delete(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if out, err := exec.Command("ip", "-n", n.Name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("netns %s: lo up: %v: %s", n.Name, err, out)
	}
	return n
}

// Run runs a command inside n and fails t when it fails.
func Run(t testing.TB, n *netns.NS, argv ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, argv...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("netns %s: %v: %v: %s", n.Name, argv, err, out)
	}
	return string(out)
}
