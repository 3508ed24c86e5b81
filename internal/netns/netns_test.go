package netns_test

import (
	"runtime"
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
