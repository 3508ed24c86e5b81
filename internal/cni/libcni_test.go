package cni

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// TestThroughLibcni drives the plugin with libcni, the library container
// runtimes (containerd, CRI-O, podman, cnitool) use: a configuration list
// on disk, result caching, capability args, CHECK with prevResult, STATUS,
// and GC (which DELs cached stale attachments, then calls the plugin's GC).
// CNI_PATH holds a wrapper that runs the real binary in the host namespace.
func TestThroughLibcni(t *testing.T) {
	e := newHostEnv(t)
	binDir := t.TempDir()
	wrapper := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", e.host.Name, pluginBin)
	if err := os.WriteFile(filepath.Join(binDir, "bulkhead-cni"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes([]byte(fmt.Sprintf(`{
		"cniVersion": "1.1.0",
		"name": "bhnet",
		"plugins": [{
			"type": "bulkhead-cni",
			"agentSocket": %q,
			"subnet": "10.77.0.0/16",
			"dataDir": %q,
			"capabilities": {"ips": true}
		}]
	}`, e.socket, e.dataDir)))
	if err != nil {
		t.Fatal(err)
	}
	cninet := libcni.NewCNIConfigWithCacheDir([]string{binDir}, t.TempDir(), nil)
	ctx := context.Background()

	if err := cninet.GetStatusNetworkList(ctx, list); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	rts := map[string]*libcni.RuntimeConf{}
	for _, id := range []string{"keep", "stale"} {
		w := nstest.NS(t, nsPrefix)
		rts[id] = &libcni.RuntimeConf{ContainerID: id, NetNS: w.Path(), IfName: "eth0",
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "shop"}, {"K8S_POD_NAME", id}}}
	}
	rts["keep"].CapabilityArgs = map[string]any{"ips": []string{"10.77.3.3/16"}}
	for _, id := range []string{"keep", "stale"} {
		r, err := cninet.AddNetworkList(ctx, list, rts[id])
		if err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
		res, err := types100.NewResultFromResult(r)
		if err != nil {
			t.Fatalf("ADD %s: result: %v", id, err)
		}
		if id == "keep" && (len(res.IPs) != 1 || res.IPs[0].Address.IP.String() != "10.77.3.3") {
			t.Errorf("ADD with runtimeConfig.ips 10.77.3.3: got %v", res.IPs)
		}
	}
	if err := cninet.CheckNetworkList(ctx, list, rts["keep"]); err != nil {
		t.Errorf("CHECK: %v", err)
	}
	err = cninet.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: []types.GCAttachment{{ContainerID: "keep", IfName: "eth0"}}})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	if keys := e.agent.keys(); len(keys) != 1 || keys[0] != "shop/keep" {
		t.Errorf("after GC the agent holds %v, want [shop/keep]", keys)
	}
	if err := cninet.DelNetworkList(ctx, list, rts["keep"]); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if err := cninet.DelNetworkList(ctx, list, rts["keep"]); err != nil {
		t.Fatalf("DEL again: %v", err)
	}
	if st := e.state(); len(st.Allocations) != 0 || len(e.agent.keys()) != 0 || strings.Contains(e.hostLinks(), attach.HostIfName("keep/eth0")) {
		t.Errorf("after DEL: allocations %v, agent %v", st.Allocations, e.agent.keys())
	}

	// An error reaches the runtime with its code.
	e.agent.stop()
	err = cninet.GetStatusNetworkList(ctx, list)
	var ce *types.Error
	if !errors.As(err, &ce) || ce.Code != CodeNotAvailable {
		t.Errorf("STATUS with the agent down = %v, want code 50", err)
	}
}
