package cni

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// TestAddSweepsAttachmentsWhoseInterfaceIsGone: a container whose
// namespace went away without DEL (`ctr run -d --cni` never calls it)
// leaves neither a registration nor an allocation behind once another
// ADD of the network runs, and can be attached again under its id; a
// live attachment and an ADD in flight are left alone.
func TestAddSweepsAttachmentsWhoseInterfaceIsGone(t *testing.T) {
	e := newHostEnv(t)
	args := func(name string) string { return "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=" + name }
	dead, live := nstest.NS(t, nsPrefix), nstest.NS(t, nsPrefix)
	e.run(call{Command: "ADD", ContainerID: "dead", NetNS: dead.Path(), IfName: "eth0", Args: args("dead"), Stdin: e.conf(nil)}).ok(t)
	e.run(call{Command: "ADD", ContainerID: "live", NetNS: live.Path(), IfName: "eth0", Args: args("live"), Stdin: e.conf(nil)}).ok(t)
	// An ADD in flight: reserved, not complete, no veth yet.
	if err := (&Store{Dir: filepath.Join(e.dataDir, "bhnet")}).Reserve(&Allocation{ContainerID: "flight", IfName: "eth0",
		HostIf: attach.HostIfName("flight/eth0"), Created: time.Now()}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := dead.Delete(); err != nil {
		t.Fatal(err)
	}
	deadIf := attach.HostIfName("dead/eth0")
	for i := 0; strings.Contains(e.hostLinks(), deadIf); i++ {
		if i == 100 {
			t.Fatalf("%s still exists 5 s after its peer's namespace was removed", deadIf)
		}
		time.Sleep(50 * time.Millisecond)
	}

	again := nstest.NS(t, nsPrefix)
	e.run(call{Command: "ADD", ContainerID: "dead", NetNS: again.Path(), IfName: "eth0", Args: args("dead"), Stdin: e.conf(nil)}).ok(t)
	if keys := e.agent.keys(); !slices.Equal(keys, []string{"shop/dead", "shop/live"}) {
		t.Errorf("after attaching dead again the agent holds %v", keys)
	}
	st := e.state()
	if a := st.Allocations["dead/eth0"]; a == nil || !a.Complete || st.Allocations["live/eth0"] == nil || st.Allocations["flight/eth0"] == nil {
		t.Errorf("allocations after the sweep: %+v; want dead (new), live and flight", st.Allocations)
	}

	// Removed for good: the next ADD of another container sweeps it.
	if err := again.Delete(); err != nil {
		t.Fatal(err)
	}
	for i := 0; strings.Contains(e.hostLinks(), deadIf); i++ {
		if i == 100 {
			t.Fatalf("%s still exists 5 s after its peer's namespace was removed", deadIf)
		}
		time.Sleep(50 * time.Millisecond)
	}
	other := nstest.NS(t, nsPrefix)
	e.run(call{Command: "ADD", ContainerID: "other", NetNS: other.Path(), IfName: "eth0", Args: args("other"), Stdin: e.conf(nil)}).ok(t)
	if keys := e.agent.keys(); !slices.Equal(keys, []string{"shop/live", "shop/other"}) {
		t.Errorf("after dead's namespace went without DEL and another ADD, the agent holds %v", keys)
	}
	if a := e.state().Allocations["dead/eth0"]; a != nil {
		t.Errorf("dead's allocation %+v is left", a)
	}
}
