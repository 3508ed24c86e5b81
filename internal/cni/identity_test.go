package cni

import (
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// Issue 10: `podman restart`, `start` and `network reload` run ADD again
// without the CNI_ARGS of the first ADD (Podman copies a CNI_ARGS
// environment variable only into the ADD of `podman run`), which
// re-registered the workload as default/<name>: its identity changed
// without an error. A container keeps the namespace its runtime gave it
// at its first ADD, by container id; a namespace the runtime gives again
// is what counts, and another container of the same name gets none of it.
func TestRestartKeepsTheNamespace(t *testing.T) {
	e := newDefectEnv(t)
	a := startRealAgent(t, e, dataplane.NewUserspace())
	w := nstest.NS(t, defPrefix)
	conf := labelled(e, "web", nil)
	e.run(call{Command: "ADD", ContainerID: "c1", NetNS: w.Path(), IfName: "eth0",
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0", Stdin: conf}).ok(t)
	e.run(call{Command: "DEL", ContainerID: "c1", IfName: "eth0", Stdin: conf}).ok(t)

	// As Podman restarts it: only its name.
	e.run(call{Command: "ADD", ContainerID: "c1", NetNS: w.Path(), IfName: "eth0",
		Args: "IgnoreUnknown=1;K8S_POD_NAME=web-0", Stdin: conf}).ok(t)
	if regs := a.Workloads(); len(regs) != 1 || regs[0].Namespace != "shop" || regs[0].Name != "web-0" {
		t.Fatalf("after a restart without K8S_POD_NAMESPACE the agent holds %+v; want shop/web-0", regs)
	}
	e.run(call{Command: "DEL", ContainerID: "c1", IfName: "eth0", Stdin: conf}).ok(t)

	// A namespace given again is what counts.
	e.run(call{Command: "ADD", ContainerID: "c1", NetNS: w.Path(), IfName: "eth0",
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=lab;K8S_POD_NAME=web-0", Stdin: conf}).ok(t)
	if regs := a.Workloads(); len(regs) != 1 || regs[0].Namespace != "lab" {
		t.Fatalf("with K8S_POD_NAMESPACE=lab the agent holds %+v; want lab/web-0", regs)
	}
	e.run(call{Command: "DEL", ContainerID: "c1", IfName: "eth0", Stdin: conf}).ok(t)

	// Another container of the same name inherits nothing.
	w2 := nstest.NS(t, defPrefix)
	e.run(call{Command: "ADD", ContainerID: "c2", NetNS: w2.Path(), IfName: "eth0",
		Args: "IgnoreUnknown=1;K8S_POD_NAME=web-0", Stdin: conf}).ok(t)
	if regs := a.Workloads(); len(regs) != 1 || regs[0].Namespace != "default" {
		t.Fatalf("another container named web-0 is registered as %+v; want default/web-0", regs)
	}
}
