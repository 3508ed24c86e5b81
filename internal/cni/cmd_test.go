package cni

import (
	"encoding/json"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Tests of the real binary that need no root: VERSION, STATUS, and the
// errors found before anything is created.

func TestVersionOutput(t *testing.T) {
	o := runPlugin(nil, call{Command: "VERSION", Stdin: []byte(`{"cniVersion": "1.1.0"}`)})
	var v struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal(o.ok(t), &v); err != nil {
		t.Fatalf("VERSION output %s: %v", o.Stdout, err)
	}
	if v.CNIVersion != "1.1.0" || !slices.Contains(v.SupportedVersions, "1.1.0") || !slices.Contains(v.SupportedVersions, "0.4.0") {
		t.Errorf("VERSION = %+v, want cniVersion 1.1.0 and 0.4.0 … 1.1.0 supported", v)
	}
}

func TestErrorsAreCNIJSON(t *testing.T) {
	dir := t.TempDir()
	good := netConf(filepath.Join(dir, "agent.sock"), filepath.Join(dir, "data"), nil)
	add := func(stdin []byte) call {
		return call{Command: "ADD", ContainerID: "c1", NetNS: "/run/netns/bhcn-does-not-exist", IfName: "eth0", Stdin: stdin}
	}
	cases := []struct {
		name string
		call call
		code uint
		want []string // in msg or details
	}{
		{"missing CNI_CONTAINERID", call{Command: "ADD", NetNS: "/x", IfName: "eth0", Stdin: good}, CodeInvalidEnv, []string{"CNI_CONTAINERID"}},
		{"unknown command", call{Command: "FROB", Stdin: good}, CodeInvalidEnv, []string{"FROB"}},
		{"not JSON", add([]byte("subnet: 10.0.0.0/16")), 6, []string{"unmarshal"}},
		{"unknown field", add(netConf("/s", "/d", map[string]any{"subnett": "10.0.0.0/8"})), CodeUnsupportedField,
			[]string{`"subnett"`, `"10.0.0.0/8"`, "valid fields: agentSocket, subnet"}},
		{"host bits", add(netConf("/s", "/d", map[string]any{"subnet": "10.77.0.1/16"})), CodeInvalidConfig, []string{"host bits", "10.77.0.0/16"}},
		{"IPv6 as subnet", add(netConf("/s", "/d", map[string]any{"subnet": "fd00::/64"})), CodeInvalidConfig, []string{"subnet", "IPv4 prefix"}},
		{"no subnet", add(netConf("/s", "/d", map[string]any{"subnet": nil})), CodeInvalidConfig, []string{"subnet: required"}},
		{"mtu", add(netConf("/s", "/d", map[string]any{"mtu": 10})), CodeInvalidConfig, []string{"mtu 10", "68 to 65535"}},
		{"relative dataDir", add(netConf("/s", "d", nil)), CodeInvalidConfig, []string{"dataDir", "absolute"}},
		{"ipam", add(netConf("/s", "/d", map[string]any{"ipam": map[string]any{"type": "host-local"}})), CodeInvalidConfig, []string{"remove ipam"}},
		{"conflist", add(netConf("/s", "/d", map[string]any{"plugins": []any{}})), CodeInvalidConfig, []string{"network configuration list"}},
		{"label", add(netConf("/s", "/d", map[string]any{"args": map[string]any{"cni": map[string]any{"labels": []any{map[string]any{"key": "app"}}}}})),
			CodeInvalidConfig, []string{"args.cni.labels[0]", `"key" and "value"`}},
		{"port", add(netConf("/s", "/d", map[string]any{"args": map[string]any{"bulkhead": map[string]any{"ports": []any{map[string]any{"name": "web", "port": 70000}}}}})),
			CodeInvalidConfig, []string{"args.bulkhead.ports[0].port: port 70000 is out of range"}},
		{"port field", add(netConf("/s", "/d", map[string]any{"args": map[string]any{"bulkhead": map[string]any{"ports": []any{map[string]any{"name": "web", "prot": "tcp"}}}}})),
			CodeUnsupportedField, []string{"args.bulkhead", `"prot"`}},
		{"bad ip", add(netConf("/s", "/d", map[string]any{"args": map[string]any{"cni": map[string]any{"ips": []string{"10.77.0.300"}}}})),
			CodeInvalidConfig, []string{`args.cni.ips[0] "10.77.0.300"`}},
		{"ip family without subnet", add(netConf("/s", "/d", map[string]any{"args": map[string]any{"cni": map[string]any{"ips": []string{"fd00::5"}}}})),
			CodeAddressUnavailable, []string{"no IPv6 subnet", "subnet6"}},
		{"CNI_ARGS not pairs", call{Command: "ADD", ContainerID: "c1", NetNS: "/x", IfName: "eth0", Args: "K8S_POD_NAME", Stdin: good},
			CodeInvalidEnv, []string{"CNI_ARGS", "KEY=VALUE"}},
		{"CNI_ARGS unknown", call{Command: "ADD", ContainerID: "c1", NetNS: "/x", IfName: "eth0", Args: "K8S_POD_NAMESPAC=x", Stdin: good},
			CodeInvalidEnv, []string{"K8S_POD_NAMESPAC", "IgnoreUnknown=1"}},
		{"CNI_ARGS bad name", call{Command: "ADD", ContainerID: "c1", NetNS: "/x", IfName: "eth0", Args: "K8S_POD_NAME=Web 0", Stdin: good},
			CodeInvalidEnv, []string{"K8S_POD_NAME", "Web 0"}},
		{"no namespace", add(good), CodeInvalidEnv, []string{"CNI_NETNS", "bhcn-does-not-exist"}},
		{"incompatible version", add(netConf("/s", "/d", map[string]any{"cniVersion": "9.9.9"})), 1, []string{"incompatible"}},
		{"STATUS before 1.1.0", call{Command: "STATUS", Stdin: netConf("/s", "/d", map[string]any{"cniVersion": "1.0.0"})}, 1, []string{"STATUS"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := runPlugin(nil, c.call)
			e := o.cniErr(t)
			text := e.Msg + " | " + e.Details
			if e.Code != c.code {
				t.Errorf("code %d, want %d: %s", e.Code, c.code, text)
			}
			for _, w := range c.want {
				if !strings.Contains(text, w) {
					t.Errorf("error %q lacks %q", text, w)
				}
			}
		})
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, "data", "*")); len(entries) > 0 {
		t.Errorf("refused calls wrote IPAM state: %v", entries)
	}
}

func TestStatus(t *testing.T) {
	dir := t.TempDir()
	socket, data := filepath.Join(dir, "agent.sock"), filepath.Join(dir, "data")
	status := func(extra map[string]any) outcome {
		return runPlugin(nil, call{Command: "STATUS", Stdin: netConf(socket, data, extra)})
	}

	e := status(nil).cniErr(t)
	if e.Code != CodeNotAvailable || !strings.Contains(e.Details, "health check") || !strings.Contains(e.Details, socket) {
		t.Errorf("STATUS without an agent = %d %s, want 50 naming the socket and the health check", e.Code, e.Details)
	}

	startFakeAgent(t, socket)
	if o := status(nil); len(o.ok(t)) != 0 {
		t.Errorf("STATUS succeeded but printed %s; the spec wants no output", o.Stdout)
	}

	// A /30 has two addresses; take both.
	small := map[string]any{"subnet": "10.77.9.0/30"}
	store := &Store{Dir: filepath.Join(data, "bhnet")}
	for _, id := range []string{"a", "b"} {
		a := &Allocation{ContainerID: id, IfName: "eth0", HostIf: "bh" + id, Created: time.Now()}
		if err := store.Reserve(a, nil, []netip.Prefix{netip.MustParsePrefix("10.77.9.0/30")}); err != nil {
			t.Fatal(err)
		}
	}
	e = status(small).cniErr(t)
	if e.Code != CodeNotAvailable || !strings.Contains(e.Details, "10.77.9.0/30 has no address left") {
		t.Errorf("STATUS with a full subnet = %d %s, want 50 saying no address is left", e.Code, e.Details)
	}
}
