package cni

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseConfigDefaultsAndArgs(t *testing.T) {
	c, err := ParseConfig([]byte(`{
		"cniVersion": "1.1.0", "name": "net1", "type": "bulkhead-cni",
		"subnet": "10.1.0.0/24", "subnet6": "fd01::/64",
		"dns": {"nameservers": ["10.1.0.53"]},
		"capabilities": {"ips": true},
		"runtimeConfig": {"ips": ["10.1.0.7/24"], "portMappings": []},
		"cni.dev/attachments": [],
		"args": {
			"cni": {"labels": [{"key": "app.kubernetes.io/name", "value": "db"}], "ips": ["fd01::9"], "other": 1},
			"bulkhead": {"ports": [{"name": "pg", "port": 5432}]},
			"someone-else": {"x": 1}
		}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.AgentSocket != "/run/bulkhead/agent.sock" || c.DataDir != DefaultDataDir || c.StateDir() != DefaultDataDir+"/net1" {
		t.Errorf("defaults: socket %q dataDir %q", c.AgentSocket, c.DataDir)
	}
	// args.cni.ips and runtimeConfig.ips together: one address per family.
	if !slices.Equal(c.Args.IPs, []netip.Addr{netip.MustParseAddr("fd01::9"), netip.MustParseAddr("10.1.0.7")}) {
		t.Errorf("IPs = %v, want args.cni.ips and runtimeConfig.ips", c.Args.IPs)
	}
	if c.Args.Labels["app.kubernetes.io/name"] != "db" || len(c.Args.Ports) != 1 || c.Args.Ports[0].Protocol != "tcp" {
		t.Errorf("args = %+v", c.Args)
	}
	if len(c.DNS.Nameservers) != 1 || len(c.Subnets()) != 2 {
		t.Errorf("dns %v subnets %v", c.DNS, c.Subnets())
	}
}

func TestParseConfigReportsEveryProblem(t *testing.T) {
	_, err := ParseConfig([]byte(`{"name": "n", "subnet": "10.0.0.0/31", "subnet6": "10.0.0.0/8", "mtu": 1000,
		"agentSocket": "relative.sock", "dns": {"servers": ["x"]}, "ipMasq": true}`))
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{
		`subnet "10.0.0.0/31" leaves no address`, `subnet6 "10.0.0.0/8": want an IPv6 prefix`,
		`agentSocket "relative.sock"`, `dns: unknown field "servers"`, "ipMasq: not supported",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if code := errorCode(err); code != CodeUnsupportedField {
		t.Errorf("code %d, want 2 (an unknown key decides)", code)
	}
}

func TestParseWorkload(t *testing.T) {
	cases := []struct {
		args, id string
		want     Workload
		err      string
	}{
		{"", "0123abcd", Workload{Namespace: "default", Name: "0123abcd"}, ""},
		{"", "My_Container", Workload{Namespace: "default", Name: "my-container"}, ""},
		{"K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=x;K8S_POD_UID=u", "x", Workload{Namespace: "shop", Name: "web-0"}, ""},
		{"IgnoreUnknown=true;Foo=1;K8S_POD_NAME=a.b", "x", Workload{Namespace: "default", Name: "a.b"}, ""},
		{"Foo=1", "x", Workload{}, "unknown keys Foo"},
		{"K8S_POD_NAMESPACE=", "x", Workload{}, "K8S_POD_NAMESPACE"},
		{"", "-dash.", Workload{}, "pass K8S_POD_NAME"},
		{"IP=10.0.0.5", "x", Workload{Namespace: "default", Name: "x", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.5")}}, ""},
		{"IP=10.0.0.5/24, fd00::5", "x", Workload{Namespace: "default", Name: "x",
			IPs: []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5")}}, ""},
		{"IP=::ffff:10.0.0.5", "x", Workload{Namespace: "default", Name: "x", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.5")}}, ""},
		{"IP=10.0.0.5,10.0.0.6", "x", Workload{}, "one address per family"},
		{"IP=10.0.0.5;IP=10.0.0.6", "x", Workload{}, "one address per family"},
		{"IP=fe80::1%eth0", "x", Workload{}, `IP "fe80::1%eth0"`},
		{"IP=", "x", Workload{}, `IP ""`},
		// Podman sends its container's name as K8S_POD_NAME: generated
		// names have '_', chosen ones may have upper case. They are
		// normalised as the container id is, and the original is kept.
		{"IgnoreUnknown=1;K8S_POD_NAME=frosty_pare", "x", Workload{Namespace: "default", Name: "frosty-pare", RuntimeName: "frosty_pare"}, ""},
		{"K8S_POD_NAME=Web_1", "x", Workload{Namespace: "default", Name: "web-1", RuntimeName: "Web_1"}, ""},
		{"K8S_POD_NAME=web-1", "x", Workload{Namespace: "default", Name: "web-1"}, ""},
		{"K8S_POD_NAME=web_", "x", Workload{}, `K8S_POD_NAME "web_"`},
		{"K8S_POD_NAME=a b", "x", Workload{}, `K8S_POD_NAME "a b"`},
	}
	for _, c := range cases {
		w, err := ParseWorkload(c.args, c.id)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || errorCode(err) != CodeInvalidEnv {
				t.Errorf("ParseWorkload(%q, %q) = %v, want code 4 with %q", c.args, c.id, err, c.err)
			}
			continue
		}
		if err != nil || w.Namespace != c.want.Namespace || w.Name != c.want.Name || w.RuntimeName != c.want.RuntimeName ||
			!slices.Equal(w.IPs, c.want.IPs) {
			t.Errorf("ParseWorkload(%q, %q) = %v, %v; want %v", c.args, c.id, w, err, c.want)
		}
	}
}

// Requested addresses from several sources must agree, family by family;
// one that disagrees is refused naming both, never dropped silently.
func TestRequestedAddressSourcesAgree(t *testing.T) {
	conf := func(extra string) string {
		return `{"cniVersion": "1.1.0", "name": "n", "subnet": "10.1.0.0/24"` + extra + `}`
	}
	_, err := ParseConfig([]byte(conf(`, "args": {"cni": {"ips": ["10.1.0.5"]}}, "runtimeConfig": {"ips": ["10.1.0.6"]}`)))
	if errorCode(err) != CodeInvalidConfig || err == nil || !strings.Contains(err.Error(), "args.cni.ips 10.1.0.5 and runtimeConfig.ips 10.1.0.6") {
		t.Errorf("disagreeing args.cni.ips and runtimeConfig.ips = %v, want code 7 naming both", err)
	}
	_, err = ParseConfig([]byte(conf(`, "runtimeConfig": {"ips": ["fd00::6"]}`)))
	if errorCode(err) != CodeAddressUnavailable || err == nil || !strings.Contains(err.Error(), "runtimeConfig.ips: fd00::6: this network has no IPv6 subnet") {
		t.Errorf("runtimeConfig.ips of a family without subnet = %v, want code 100 naming runtimeConfig.ips", err)
	}
	c, err := ParseConfig([]byte(conf(`, "runtimeConfig": {"ips": ["10.1.0.6/24"]}`)))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RequestIPs("CNI_ARGS IP", []netip.Addr{netip.MustParseAddr("10.1.0.6")}, CodeInvalidEnv); err != nil {
		t.Errorf("the same address twice: %v", err)
	}
	err = c.RequestIPs("CNI_ARGS IP", []netip.Addr{netip.MustParseAddr("10.1.0.7")}, CodeInvalidEnv)
	if errorCode(err) != CodeInvalidEnv || !strings.Contains(err.Error(), "runtimeConfig.ips 10.1.0.6 and CNI_ARGS IP 10.1.0.7") {
		t.Errorf("disagreeing CNI_ARGS IP = %v, want code 4 naming both", err)
	}
	if !slices.Equal(c.Args.IPs, []netip.Addr{netip.MustParseAddr("10.1.0.6")}) {
		t.Errorf("IPs = %v, want [10.1.0.6]", c.Args.IPs)
	}
}
