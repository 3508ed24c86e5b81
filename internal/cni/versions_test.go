package cni

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// Issue 10, compatibility: the plugin answers in the configuration's
// cniVersion, as the reference plugins do (Podman 4.3's CNI library
// refuses a 1.1.0 result), and refuses a version it does not speak with
// the spec's code 1.

// verPrefix names the namespaces these tests create.
const verPrefix = "bhcv"

// allVersions are the CNI versions the plugin speaks.
var allVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

func newVersionEnv(t *testing.T) *hostEnv {
	t.Helper()
	nstest.RequireRoot(t)
	nstest.RequireCommand(t, "ip")
	dir := t.TempDir()
	e := &hostEnv{t: t, host: nstest.NS(t, verPrefix), socket: filepath.Join(dir, "agent.sock"), dataDir: filepath.Join(dir, "data")}
	e.agent = startFakeAgent(t, e.socket)
	return e
}

// resultShape is what differs between the versions' results.
type resultShape struct {
	CNIVersion string `json:"cniVersion"`
	IPs        []struct {
		Version   string `json:"version"`
		Address   string `json:"address"`
		Interface *int   `json:"interface"`
	} `json:"ips"`
}

// TestEveryVersionThroughTheBinary runs ADD, CHECK (0.4.0 on) and DEL in
// each version with the real binary, and checks that the result is in
// that version: 0.3.x and 0.4.0 results carry each address's "version",
// 1.x results do not.
func TestEveryVersionThroughTheBinary(t *testing.T) {
	e := newVersionEnv(t)
	for i, v := range allVersions {
		t.Run(v, func(t *testing.T) {
			w := nstest.NS(t, verPrefix)
			id := fmt.Sprintf("v%d", i)
			conf := e.conf(map[string]any{"cniVersion": v, "subnet6": "fd77::/64"})
			out := e.run(call{Command: "ADD", ContainerID: id, NetNS: w.Path(), IfName: "eth0", Stdin: conf}).ok(t)
			var got resultShape
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("result: %v: %s", err, out)
			}
			if got.CNIVersion != v {
				t.Errorf("result cniVersion %q, want %q: %s", got.CNIVersion, v, out)
			}
			if len(got.IPs) != 2 {
				t.Fatalf("result has %d addresses, want 2: %s", len(got.IPs), out)
			}
			old := v < "1.0.0"
			for _, ip := range got.IPs {
				want := map[bool]string{true: "4", false: "6"}[!strings.Contains(ip.Address, ":")]
				if old && ip.Version != want || !old && ip.Version != "" {
					t.Errorf("version %s: address %s carries version %q", v, ip.Address, ip.Version)
				}
				if ip.Interface == nil || *ip.Interface != 1 {
					t.Errorf("version %s: address %s: interface %v, want 1", v, ip.Address, ip.Interface)
				}
			}
			// The result parses as the version's own type.
			if r, err := version.NewResult(v, out); err != nil || r.Version() != v {
				t.Errorf("version.NewResult(%s) = %v, %v", v, r, err)
			}
			if len(resultAddrs(parseResult(t, v, out))) != 2 {
				t.Errorf("converted result lost addresses: %s", out)
			}
			check := e.run(call{Command: "CHECK", ContainerID: id, NetNS: w.Path(), IfName: "eth0", Stdin: withPrev(conf, out)})
			if v < "0.4.0" {
				// CHECK came with 0.4.0; before it the spec's code 1.
				if ce := check.cniErr(t); ce.Code != types.ErrIncompatibleCNIVersion {
					t.Errorf("CHECK in %s = %d %s, want 1", v, ce.Code, ce.Details)
				}
			} else {
				check.ok(t)
			}
			e.run(call{Command: "DEL", ContainerID: id, NetNS: w.Path(), IfName: "eth0", Stdin: withPrev(conf, out)}).ok(t)
			if st := e.state(); st.Allocations[id+"/eth0"] != nil {
				t.Errorf("DEL in %s left the allocation", v)
			}
		})
	}
}

// TestUnknownVersionRefused: a version the plugin does not speak is
// refused with code 1 before anything is made, for ADD and for DEL.
func TestUnknownVersionRefused(t *testing.T) {
	e := newVersionEnv(t)
	w := nstest.NS(t, verPrefix)
	for _, v := range []string{"0.1.0", "0.2.0", "0.3.2", "1.2.0", "2.0.0", "1.1", "", "v1.1.0"} {
		conf := e.conf(map[string]any{"cniVersion": v})
		if v == "" {
			conf = e.conf(map[string]any{"cniVersion": nil})
		}
		for _, cmd := range []string{"ADD", "DEL"} {
			ce := e.run(call{Command: cmd, ContainerID: "u", NetNS: w.Path(), IfName: "eth0", Stdin: conf}).cniErr(t)
			if ce.Code != types.ErrIncompatibleCNIVersion {
				t.Errorf("%s with cniVersion %q = %d %s %s, want 1", cmd, v, ce.Code, ce.Msg, ce.Details)
			}
		}
		e.nothingLeftIfAny(t, w, "u")
	}
	if len(e.agent.registered) != 0 {
		t.Errorf("an unknown version reached the agent: %v", e.agent.registered)
	}
}

// nothingLeftIfAny is nothingLeft for a test where the state file may
// never have been written.
func (e *hostEnv) nothingLeftIfAny(t *testing.T, w interface{ Path() string }, id string) {
	t.Helper()
	if strings.Contains(e.hostLinks(), attach.HostIfName(id+"/eth0")) {
		t.Errorf("refused ADD left %s in the host", attach.HostIfName(id+"/eth0"))
	}
	if _, err := os.Stat(filepath.Join(e.dataDir, "bhnet", "state.json")); err == nil && e.state().Allocations[id+"/eth0"] != nil {
		t.Errorf("refused ADD left its allocation")
	}
}

// TestEveryVersionThroughLibcni drives each version through libcni, the
// library runtimes use (Podman 4.3's CNI backend among them): the
// configuration list's cniVersion, ADD, the cached result, CHECK (0.4.0
// on) and DEL. libcni converts nothing for the plugin: a result in
// another version than the list's would reach the runtime as it is, and
// Podman 4.3 refuses a 1.1.0 one.
func TestEveryVersionThroughLibcni(t *testing.T) {
	e := newVersionEnv(t)
	binDir := t.TempDir()
	wrapper := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", e.host.Name, pluginBin)
	if err := os.WriteFile(filepath.Join(binDir, "bulkhead-cni"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	cninet := libcni.NewCNIConfigWithCacheDir([]string{binDir}, t.TempDir(), nil)
	ctx := context.Background()
	for i, v := range allVersions {
		t.Run(v, func(t *testing.T) {
			list, err := libcni.NetworkConfFromBytes([]byte(fmt.Sprintf(`{
				"cniVersion": %q, "name": "bhnet",
				"plugins": [{"type": "bulkhead-cni", "agentSocket": %q, "subnet": "10.77.0.0/16", "dataDir": %q}]
			}`, v, e.socket, e.dataDir)))
			if err != nil {
				t.Fatal(err)
			}
			w := nstest.NS(t, verPrefix)
			rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("l%d", i), NetNS: w.Path(), IfName: "eth0",
				Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAME", fmt.Sprintf("l%d", i)}}}
			r, err := cninet.AddNetworkList(ctx, list, rt)
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if r.Version() != v {
				t.Errorf("ADD result version %s, want %s", r.Version(), v)
			}
			cached, err := cninet.GetNetworkListCachedResult(list, rt)
			if err != nil || cached == nil || cached.Version() != v {
				t.Errorf("cached result = %v, %v; want version %s", cached, err, v)
			}
			err = cninet.CheckNetworkList(ctx, list, rt)
			if v < "0.4.0" {
				if err == nil {
					t.Errorf("CHECK in %s succeeded; libcni should refuse it", v)
				}
			} else if err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if err := cninet.DelNetworkList(ctx, list, rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if len(e.agent.keys()) != 0 {
				t.Errorf("after DEL the agent holds %v", e.agent.keys())
			}
		})
	}
}
