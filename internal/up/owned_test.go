package up

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

func exists(name string) bool {
	_, err := os.Stat(filepath.Join(netns.Dir, name))
	return err == nil
}

func noHost(fn func() error) error { return fn() }

// Two demos on one machine with the same prefix: each removes only what
// it recorded as its own, and a name someone else took since is kept.
func TestDemoRemovesOnlyItsOwn(t *testing.T) {
	nstest.RequireRoot(t)
	prefix := nstest.Name("bhhe") + "-"
	names := []string{prefix + "a", prefix + "b", prefix + "c"}
	t.Cleanup(func() {
		for _, n := range names {
			_ = (&netns.NS{Name: n}).Delete()
		}
	})
	dirA, dirB := t.TempDir(), t.TempDir()

	// Instance A makes two namespaces and is killed (nothing removed).
	a := newOwned(dirA)
	for _, n := range names[:2] {
		if _, err := a.createNS(n); err != nil {
			t.Fatal(err)
		}
	}
	// Instance B starts with the same prefix: it removes nothing of A's,
	// and refuses to take A's names.
	b := newOwned(dirB)
	if kept, err := b.removeRecorded(noHost); err != nil || len(kept) != 0 {
		t.Fatalf("B's cleanup: kept %v, %v", kept, err)
	}
	if !exists(names[0]) || !exists(names[1]) {
		t.Fatal("B's start removed A's namespaces")
	}
	if _, err := b.createNS(names[0]); err == nil || !strings.Contains(err.Error(), "is not this instance's") {
		t.Fatalf("B took A's name: %v", err)
	}
	if _, err := b.createNS(names[2]); err != nil {
		t.Fatal(err)
	}

	// A's second namespace is replaced by someone else's of the same name.
	if err := (&netns.NS{Name: names[1]}).Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := netns.Create(names[1]); err != nil {
		t.Fatal(err)
	}
	// A starts again: it removes its own, keeps the impostor's and B's.
	kept, err := newOwned(dirA).removeRecorded(noHost)
	if err != nil {
		t.Fatal(err)
	}
	if exists(names[0]) || !exists(names[1]) || !exists(names[2]) {
		t.Fatalf("after A's second start: %s %v, %s %v, %s %v", names[0], exists(names[0]), names[1], exists(names[1]), names[2], exists(names[2]))
	}
	if len(kept) != 1 || kept[0] != "namespace "+names[1] {
		t.Fatalf("kept %v", kept)
	}
	if _, err := os.Stat(filepath.Join(dirA, OwnedFile)); !os.IsNotExist(err) {
		t.Fatalf("A's record is still there: %v", err)
	}
}
