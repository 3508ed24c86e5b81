package cni

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// Issue 10, compatibility: a requested address given as CNI_ARGS IP=
// (what `podman run --ip` sends) was ignored silently. It is honoured,
// as runtimeConfig.ips is, and refused with code 100 when it is outside
// the subnet or held by another workload, here or at the agent.

func TestRequestedAddressInCNIArgs(t *testing.T) {
	e := newVersionEnv(t)
	podman := func(name, ip string) string { return "IgnoreUnknown=1;K8S_POD_NAME=" + name + ";IP=" + ip }
	w1, w2 := nstest.NS(t, verPrefix), nstest.NS(t, verPrefix)
	out := e.run(call{Command: "ADD", ContainerID: "c1", NetNS: w1.Path(), IfName: "eth0", Args: podman("web", "10.77.0.42"), Stdin: e.conf(nil)}).ok(t)
	if got := resultAddrs(parseResult(t, "1.1.0", out)); !slices.Equal(got, []netip.Addr{mustAddr("10.77.0.42")}) {
		t.Fatalf("CNI_ARGS IP=10.77.0.42: got %v", got)
	}
	if reg, _ := e.agent.get("default/web"); !slices.Equal(reg.IPs, []string{"10.77.0.42"}) {
		t.Errorf("agent got %v, want [10.77.0.42]", reg.IPs)
	}

	// A workload of another network (another interface) that the agent holds.
	e.agent.mu.Lock()
	e.agent.workloads["other/db"] = api.WorkloadRegistration{Namespace: "other", Name: "db", IPs: []string{"10.77.0.43"},
		Interface: "bhffffffffffff", ContainerID: "elsewhere"}
	e.agent.mu.Unlock()

	for _, c := range []struct {
		name, args string
		extra      map[string]any
		code       uint
		want       string
	}{
		{"held here", podman("api", "10.77.0.42"), nil, CodeAddressUnavailable, "allocated to container c1"},
		{"held at the agent", podman("api", "10.77.0.43"), nil, CodeAddressUnavailable, "workload other/db"},
		{"runtimeConfig held at the agent", "K8S_POD_NAME=api", map[string]any{"runtimeConfig": map[string]any{"ips": []string{"10.77.0.43"}}},
			CodeAddressUnavailable, "workload other/db"},
		{"outside", podman("api", "10.78.0.1"), nil, CodeAddressUnavailable, "outside subnet 10.77.0.0/16"},
		{"broadcast", podman("api", "10.77.255.255"), nil, CodeAddressUnavailable, "broadcast"},
		{"no IPv6 subnet", podman("api", "fd77::5"), nil, CodeAddressUnavailable, "CNI_ARGS IP: fd77::5: this network has no IPv6 subnet"},
		{"not an address", podman("api", "10.77.0.x"), nil, CodeInvalidEnv, `CNI_ARGS: IP "10.77.0.x"`},
		{"empty", podman("api", ""), nil, CodeInvalidEnv, "CNI_ARGS: IP"},
		{"two of a family", podman("api", "10.77.0.5,10.77.0.6"), nil, CodeInvalidEnv, "one address per family"},
		{"disagrees with runtimeConfig", podman("api", "10.77.0.5"), map[string]any{"runtimeConfig": map[string]any{"ips": []string{"10.77.0.6"}}},
			CodeInvalidEnv, "runtimeConfig.ips 10.77.0.6 and CNI_ARGS IP 10.77.0.5"},
	} {
		ce := e.run(call{Command: "ADD", ContainerID: "c2", NetNS: w2.Path(), IfName: "eth0", Args: c.args, Stdin: e.conf(c.extra)}).cniErr(t)
		if ce.Code != c.code || !strings.Contains(ce.Details, c.want) {
			t.Errorf("%s: ADD = %d %s, want %d with %q", c.name, ce.Code, ce.Details, c.code, c.want)
		}
		e.nothingLeft(t, w2, "c2")
	}
	if _, ok := e.agent.get("default/api"); ok {
		t.Error("a refused request reached the agent")
	}

	// The same address from two sources is one request.
	both := e.conf(map[string]any{"runtimeConfig": map[string]any{"ips": []string{"10.77.0.44/16"}}})
	out = e.run(call{Command: "ADD", ContainerID: "c2", NetNS: w2.Path(), IfName: "eth0", Args: podman("api", "10.77.0.44"), Stdin: both}).ok(t)
	if got := resultAddrs(parseResult(t, "1.1.0", out)); !slices.Equal(got, []netip.Addr{mustAddr("10.77.0.44")}) {
		t.Errorf("IP=10.77.0.44 and runtimeConfig.ips 10.77.0.44: got %v", got)
	}

	// DEL checks none of it: a runtime retrying DEL with what ADD refused
	// must not stay stuck.
	for _, args := range []string{podman("web", "10.77.0.x"), podman("web", "10.77.0.5,10.77.0.6"), podman("web", "")} {
		e.run(call{Command: "DEL", ContainerID: "c1", NetNS: w1.Path(), IfName: "eth0", Args: args, Stdin: e.conf(nil)}).ok(t)
	}
	if st := e.state(); st.Allocations["c1/eth0"] != nil {
		t.Error("DEL left c1's allocation")
	}
	e.run(call{Command: "DEL", ContainerID: "c2", NetNS: w2.Path(), IfName: "eth0", Args: podman("api", "10.99.0.1"), Stdin: both}).ok(t)
}

// TestRequestedAddressThroughLibcni sends IP= as Podman 4.3's CNI backend
// does (`podman run --ip`: RuntimeConf.Args, configuration 1.0.0), and
// several addresses as the ips capability, as it does for more than one.
func TestRequestedAddressThroughLibcni(t *testing.T) {
	e := newVersionEnv(t)
	binDir := t.TempDir()
	wrapper := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", e.host.Name, pluginBin)
	if err := os.WriteFile(filepath.Join(binDir, "bulkhead-cni"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	list, err := libcni.NetworkConfFromBytes([]byte(fmt.Sprintf(`{
		"cniVersion": "1.0.0", "name": "bhnet",
		"plugins": [{"type": "bulkhead-cni", "agentSocket": %q, "subnet": "10.77.0.0/16", "subnet6": "fd77::/64",
		             "dataDir": %q, "capabilities": {"ips": true}}]
	}`, e.socket, e.dataDir)))
	if err != nil {
		t.Fatal(err)
	}
	cninet := libcni.NewCNIConfigWithCacheDir([]string{binDir}, t.TempDir(), nil)
	ctx := context.Background()
	w1, w2 := nstest.NS(t, verPrefix), nstest.NS(t, verPrefix)
	one := &libcni.RuntimeConf{ContainerID: "p1", NetNS: w1.Path(), IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", "p1"}, {"IP", "10.77.7.7"}}}
	two := &libcni.RuntimeConf{ContainerID: "p2", NetNS: w2.Path(), IfName: "eth0",
		Args:           [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", "p2"}},
		CapabilityArgs: map[string]any{"ips": []string{"10.77.7.8/16", "fd77::8/64"}}}
	for _, c := range []struct {
		rt   *libcni.RuntimeConf
		want []string
	}{{one, []string{"10.77.7.7", "fd77::1"}}, {two, []string{"10.77.7.8", "fd77::8"}}} {
		r, err := cninet.AddNetworkList(ctx, list, c.rt)
		if err != nil {
			t.Fatalf("ADD %s: %v", c.rt.ContainerID, err)
		}
		res, err := types100.NewResultFromResult(r)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range resultAddrs(res) {
			got = append(got, a.String())
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("ADD %s: addresses %v, want %v", c.rt.ContainerID, got, c.want)
		}
	}
	for _, rt := range []*libcni.RuntimeConf{one, two} {
		if err := cninet.DelNetworkList(ctx, list, rt); err != nil {
			t.Errorf("DEL %s: %v", rt.ContainerID, err)
		}
	}
	if len(e.agent.keys()) != 0 {
		t.Errorf("after DEL the agent holds %v", e.agent.keys())
	}
}
