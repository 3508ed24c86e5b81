package netns_test

import (
	"os"
	"runtime"
	"strings"
	"testing"

	vnetns "github.com/vishvananda/netns"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// Creating a name that exists fails and leaves the calling thread in the
// namespace it was in.
func TestCreateExistingKeepsTheThread(t *testing.T) {
	n := nstest.NS(t, "bhhe")
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	if _, err := netns.Create(n.Name); err == nil {
		t.Fatal("created a namespace whose name exists")
	}
	after, err := vnetns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !before.Equal(after) {
		t.Fatal("a failed Create left the thread in another namespace")
	}
}

// A namespace is bound under a /run/netns that is a mount point of its
// own, as ip and Podman make it, so that neither can later hide the bind
// mount by binding the directory over itself.
func TestDirIsAMountPoint(t *testing.T) {
	nstest.NS(t, "bhhe")
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == netns.Dir {
			return
		}
	}
	t.Fatalf("%s is not a mount point after Create:\n%s", netns.Dir, data)
}
