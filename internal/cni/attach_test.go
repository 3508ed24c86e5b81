package cni

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// Root-gated tests: the real binary, run inside a throwaway host
// namespace with `ip netns exec`, attaching workload namespaces the test
// creates.

func parseResult(t *testing.T, cniVersion string, stdout []byte) *types100.Result {
	t.Helper()
	r, err := version.NewResult(cniVersion, stdout)
	if err != nil {
		t.Fatalf("result %s: %v", stdout, err)
	}
	res, err := types100.NewResultFromResult(r)
	if err != nil {
		t.Fatalf("result %s: %v", stdout, err)
	}
	return res
}

func resultAddrs(r *types100.Result) []netip.Addr {
	var out []netip.Addr
	for _, ipc := range r.IPs {
		a, _ := netip.AddrFromSlice(ipc.Address.IP)
		out = append(out, a.Unmap())
	}
	return out
}

// withPrev adds the ADD result as prevResult, as runtimes do for CHECK
// and DEL.
func withPrev(conf []byte, result []byte) []byte {
	var m map[string]any
	json.Unmarshal(conf, &m)
	var prev map[string]any
	json.Unmarshal(result, &prev)
	m["prevResult"] = prev
	b, _ := json.Marshal(m)
	return b
}

func TestAddCheckDelDualStack(t *testing.T) {
	nstest.RequireCommand(t, "ping")
	e := newHostEnv(t)
	conf := e.conf(map[string]any{
		"subnet6": "fd77::/64",
		"mtu":     1400,
		"args": map[string]any{
			"cni":      map[string]any{"labels": []map[string]string{{"key": "app", "value": "web"}, {"key": "tier", "value": "front"}}},
			"bulkhead": map[string]any{"ports": []map[string]any{{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "udp"}}},
			"other":    map[string]any{"ignored": true},
		},
	})
	w1, w2 := nstest.NS(t, nsPrefix), nstest.NS(t, nsPrefix)
	add := func(w *netns.NS, id, args string) (*types100.Result, []byte) {
		o := e.run(call{Command: "ADD", ContainerID: id, NetNS: w.Path(), IfName: "eth0", Args: args, Stdin: conf})
		out := o.ok(t)
		t.Logf("ADD %s took %v", id, o.Took)
		return parseResult(t, "1.1.0", out), out
	}
	r1, out1 := add(w1, "ctr-one", "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=123;FOO=bar")
	r2, _ := add(w2, "ctr-two", "")

	host1 := attach.HostIfName("ctr-one/eth0")
	addrs := checkDualStackResult(t, r1, host1, w1.Path())

	// The agent got labels, ports, names, addresses, interface, container.
	reg, ok := e.agent.get("shop/web-0")
	want := api.WorkloadRegistration{Namespace: "shop", Name: "web-0", Labels: map[string]string{"app": "web", "tier": "front"},
		IPs:   []string{addrs[0].String(), addrs[1].String()},
		Ports: []api.NamedPort{{Name: "http", Port: 8080, Protocol: "tcp"}, {Name: "dns", Port: 53, Protocol: "udp"}}, Interface: host1, ContainerID: "ctr-one"}
	if !ok || fmt.Sprint(reg) != fmt.Sprint(want) {
		t.Errorf("registration = %+v (found %v), want %+v", reg, ok, want)
	}
	if _, ok := e.agent.get("default/ctr-two"); !ok {
		t.Errorf("without K8S_POD_* the workload should be default/ctr-two; agent has %v", e.agent.keys())
	}

	// Traffic between the two workloads, both families, through the host.
	a2 := resultAddrs(r2)
	nstest.Run(t, w1, "ping", "-c1", "-W2", a2[0].String())
	nstest.Run(t, w1, "ping", "-6", "-c1", "-W2", a2[1].String())
	if mtu := nstest.Run(t, w1, "cat", "/sys/class/net/eth0/mtu"); strings.TrimSpace(mtu) != "1400" {
		t.Errorf("mtu in the workload = %s, want 1400", mtu)
	}

	check := call{Command: "CHECK", ContainerID: "ctr-one", NetNS: w1.Path(), IfName: "eth0", Stdin: withPrev(conf, out1)}
	e.run(check).ok(t)

	// CHECK notices an address removed inside the workload.
	nstest.Run(t, w1, "ip", "addr", "del", addrs[1].String()+"/128", "dev", "eth0")
	if ce := e.run(check).cniErr(t); ce.Code != CodeCheckFailed || !strings.Contains(ce.Details, addrs[1].String()) {
		t.Errorf("CHECK after removing %v = %d %s, want 105 naming it", addrs[1], ce.Code, ce.Details)
	}

	del := call{Command: "DEL", ContainerID: "ctr-one", NetNS: w1.Path(), IfName: "eth0", Stdin: withPrev(conf, out1)}
	e.run(del).ok(t)
	if strings.Contains(e.hostLinks(), host1) {
		t.Errorf("DEL left %s in the host", host1)
	}
	if _, ok := e.agent.get("shop/web-0"); ok {
		t.Error("DEL left the registration at the agent")
	}
	if st := e.state(); st.Allocations["ctr-one/eth0"] != nil {
		t.Error("DEL left the allocation")
	}
	e.run(del).ok(t) // DEL again: success

	// DEL after the runtime removed the namespace (no CNI_NETNS).
	if err := w2.Delete(); err != nil {
		t.Fatal(err)
	}
	e.run(call{Command: "DEL", ContainerID: "ctr-two", IfName: "eth0", Stdin: conf}).ok(t)
	if keys := e.agent.keys(); len(keys) != 0 {
		t.Errorf("agent still holds %v", keys)
	}
	if st := e.state(); len(st.Allocations) != 0 || len(st.Pending) != 0 {
		t.Errorf("state not empty after DEL: %+v", st)
	}
	if links := e.hostLinks(); strings.Contains(links, "bh") {
		t.Errorf("veths left in the host: %s", links)
	}
}

// checkDualStackResult checks an ADD result as a runtime reads it and
// returns its addresses.
func checkDualStackResult(t *testing.T, r1 *types100.Result, host1, sandbox string) []netip.Addr {
	t.Helper()
	if len(r1.Interfaces) != 2 || r1.Interfaces[0].Name != host1 || r1.Interfaces[0].Sandbox != "" ||
		r1.Interfaces[1].Name != "eth0" || r1.Interfaces[1].Sandbox != sandbox || r1.Interfaces[1].Mac == "" {
		t.Errorf("interfaces = %v, want host side %s and eth0 in %s", r1.Interfaces, host1, sandbox)
	}
	addrs := resultAddrs(r1)
	if len(addrs) != 2 || !addrs[0].Is4() || !addrs[1].Is6() ||
		!netip.MustParsePrefix("10.77.0.0/16").Contains(addrs[0]) || !netip.MustParsePrefix("fd77::/64").Contains(addrs[1]) {
		t.Fatalf("addresses = %v, want one from each subnet", addrs)
	}
	for _, ipc := range r1.IPs {
		if ones, bits := ipc.Address.Mask.Size(); ones != bits || *ipc.Interface != 1 || ipc.Gateway == nil {
			t.Errorf("ip %v: want a host prefix on interface 1 with a gateway", ipc)
		}
	}
	if len(r1.Routes) != 2 || r1.Routes[0].GW.String() != "169.254.1.1" || r1.Routes[1].GW.String() != "fe80::ecee:eeff:feee:eeee" {
		t.Errorf("routes = %v, want the two default routes through the link-local gateways", r1.Routes)
	}
	return addrs
}

// nothingLeft asserts that a refused ADD of id left no trace.
func (e *hostEnv) nothingLeft(t *testing.T, w *netns.NS, id string) {
	t.Helper()
	if hostIf := attach.HostIfName(id + "/eth0"); strings.Contains(e.hostLinks(), hostIf) {
		t.Errorf("refused ADD left %s in the host", hostIf)
	}
	if links := nstest.Run(t, w, "ip", "-o", "link", "show"); strings.Contains(links, "eth0") {
		t.Errorf("refused ADD left eth0 in the workload: %s", links)
	}
	st := e.state()
	if st.Allocations[id+"/eth0"] != nil || slices.ContainsFunc(st.Pending, func(a *Allocation) bool { return a.ContainerID == id }) {
		t.Errorf("refused ADD left its allocation: %+v", st)
	}
}

func TestRequestedAddresses(t *testing.T) {
	e := newHostEnv(t)
	withIPs := func(ips ...string) []byte {
		return e.conf(map[string]any{"args": map[string]any{"cni": map[string]any{"ips": ips}}})
	}
	w1, w2 := nstest.NS(t, nsPrefix), nstest.NS(t, nsPrefix)
	out := e.run(call{Command: "ADD", ContainerID: "c1", NetNS: w1.Path(), IfName: "eth0", Stdin: withIPs("10.77.0.50/16")}).ok(t)
	if got := resultAddrs(parseResult(t, "1.1.0", out)); len(got) != 1 || got[0] != netip.MustParseAddr("10.77.0.50") {
		t.Fatalf("requested 10.77.0.50, got %v", got)
	}
	if reg, _ := e.agent.get("default/c1"); !slices.Equal(reg.IPs, []string{"10.77.0.50"}) {
		t.Errorf("agent got %v, want [10.77.0.50]", reg.IPs)
	}
	for _, c := range []struct{ ip, want string }{
		{"10.77.0.50", "allocated to container c1 interface eth0"},
		{"10.78.0.1", "outside subnet 10.77.0.0/16"},
		{"10.77.0.0", "network address"},
		{"10.77.255.255", "broadcast address"},
	} {
		ce := e.run(call{Command: "ADD", ContainerID: "c2", NetNS: w2.Path(), IfName: "eth0", Stdin: withIPs(c.ip)}).cniErr(t)
		if ce.Code != CodeAddressUnavailable || !strings.Contains(ce.Details, c.want) {
			t.Errorf("ADD requesting %s = %d %s, want 100 with %q", c.ip, ce.Code, ce.Details, c.want)
		}
		e.nothingLeft(t, w2, "c2")
	}
	// ADD twice without DEL is refused, and the first attachment stays.
	ce := e.run(call{Command: "ADD", ContainerID: "c1", NetNS: w1.Path(), IfName: "eth0", Stdin: e.conf(nil)}).cniErr(t)
	if ce.Code != CodeAlreadyAttached {
		t.Errorf("second ADD = %d %s, want 104", ce.Code, ce.Details)
	}
	if !strings.Contains(e.hostLinks(), attach.HostIfName("c1/eth0")) || e.state().Allocations["c1/eth0"] == nil {
		t.Error("a refused second ADD removed the first attachment")
	}
	// ADD into the plugin's own namespace is refused before anything is made.
	ce = e.run(call{Command: "ADD", ContainerID: "c3", NetNS: e.host.Path(), IfName: "eth0", Stdin: e.conf(nil)}).cniErr(t)
	if ce.Code != CodeInvalidEnv || !strings.Contains(ce.Details, "own (host) namespace") {
		t.Errorf("ADD into the host namespace = %d %s, want 4", ce.Code, ce.Details)
	}
	if e.state().Allocations["c3/eth0"] != nil || strings.Contains(e.hostLinks(), attach.HostIfName("c3/eth0")) {
		t.Error("ADD into the host namespace left something behind")
	}
}

func TestAddFailsCleanlyWhenTheAgentIsDownOrRefuses(t *testing.T) {
	e := newHostEnv(t)
	w := nstest.NS(t, nsPrefix)
	down := e.conf(map[string]any{"agentSocket": filepath.Join(t.TempDir(), "nobody.sock")})
	o := e.run(call{Command: "ADD", ContainerID: "c1", NetNS: w.Path(), IfName: "eth0", Stdin: down})
	if ce := o.cniErr(t); ce.Code != CodeTryAgainLater || !strings.Contains(ce.Details, "unreachable") {
		t.Errorf("ADD with the agent down = %d %s, want 11", ce.Code, ce.Details)
	}
	e.nothingLeft(t, w, "c1")

	e.agent.mu.Lock()
	e.agent.refuse = "label app: value too long"
	e.agent.mu.Unlock()
	ce := e.run(call{Command: "ADD", ContainerID: "c1", NetNS: w.Path(), IfName: "eth0", Stdin: e.conf(nil)}).cniErr(t)
	if ce.Code != CodeAgentRefused || !strings.Contains(ce.Details, "value too long") {
		t.Errorf("ADD the agent refuses = %d %s, want 102 with the agent's reason", ce.Code, ce.Details)
	}
	e.nothingLeft(t, w, "c1")
}

// DEL while the agent is down succeeds, keeps the address reserved, and
// the next call that reaches the agent makes it forget the workload.
func TestDelWhileTheAgentIsDown(t *testing.T) {
	e := newHostEnv(t)
	w := nstest.NS(t, nsPrefix)
	conf := e.conf(map[string]any{"subnet": "10.77.5.0/30"}) // room for two
	out := e.run(call{Command: "ADD", ContainerID: "c1", NetNS: w.Path(), IfName: "eth0", Stdin: conf}).ok(t)
	ip := resultAddrs(parseResult(t, "1.1.0", out))[0]
	reg, _ := e.agent.get("default/c1")
	e.agent.stop()

	e.run(call{Command: "DEL", ContainerID: "c1", NetNS: w.Path(), IfName: "eth0", Stdin: conf}).ok(t)
	if strings.Contains(e.hostLinks(), attach.HostIfName("c1/eth0")) {
		t.Error("DEL with the agent down left the veth")
	}
	st := e.state()
	if len(st.Pending) != 1 || !slices.Contains(st.Pending[0].IPs, ip) || len(st.Allocations) != 0 {
		t.Fatalf("state after DEL with the agent down = %+v, want %v pending", st, ip)
	}
	if ce := runPlugin(nil, call{Command: "STATUS", Stdin: conf}).cniErr(t); ce.Code != CodeNotAvailable {
		t.Errorf("STATUS with the agent down = %d, want 50", ce.Code)
	}
	// The agent comes back, still holding the registration.
	e.agent = startFakeAgent(t, e.socket)
	e.agent.workloads["default/c1"] = reg
	e.run(call{Command: "DEL", ContainerID: "c1", IfName: "eth0", Stdin: conf}).ok(t)
	if _, ok := e.agent.get("default/c1"); ok {
		t.Error("the agent still holds default/c1 after the pending unregistration")
	}
	if st := e.state(); len(st.Pending) != 0 {
		t.Errorf("pending after the agent came back: %+v", st.Pending)
	}
}

func TestGC(t *testing.T) {
	e := newHostEnv(t)
	conf := e.conf(nil)
	ids := []string{"g1", "g2", "g3"}
	for _, id := range ids {
		w := nstest.NS(t, nsPrefix)
		e.run(call{Command: "ADD", ContainerID: id, NetNS: w.Path(), IfName: "eth0", Stdin: conf}).ok(t)
	}
	// An ADD in flight: allocated, not yet registered.
	inflight := &Allocation{ContainerID: "g4", IfName: "eth0", HostIf: attach.HostIfName("g4/eth0"), Created: time.Now()}
	store := &Store{Dir: filepath.Join(e.dataDir, "bhnet")}
	if err := store.Reserve(inflight, nil, []netip.Prefix{netip.MustParsePrefix("10.77.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	gc := e.conf(map[string]any{"cni.dev/valid-attachments": []types.GCAttachment{{ContainerID: "g2", IfName: "eth0"}}})
	for range 2 { // a second GC finds nothing to do
		e.run(call{Command: "GC", Stdin: gc}).ok(t)
		links := e.hostLinks()
		for _, id := range ids {
			present := strings.Contains(links, attach.HostIfName(id+"/eth0"))
			_, registered := e.agent.get("default/" + id)
			allocated := e.state().Allocations[id+"/eth0"] != nil
			if want := id == "g2"; present != want || registered != want || allocated != want {
				t.Errorf("after GC %s: veth %v, registered %v, allocated %v; want all %v", id, present, registered, allocated, want)
			}
		}
		if e.state().Allocations["g4/eth0"] == nil {
			t.Error("GC removed an ADD in flight")
		}
	}
}

func TestConcurrentAdds(t *testing.T) {
	e := newHostEnv(t)
	const n = 16
	conf := e.conf(nil)
	ws := make([]*netns.NS, n)
	for i := range ws {
		ws[i] = nstest.NS(t, nsPrefix)
	}
	outs := make([]outcome, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			outs[i] = e.run(call{Command: "ADD", ContainerID: fmt.Sprintf("par%02d", i), NetNS: ws[i].Path(), IfName: "eth0", Stdin: conf})
		})
	}
	wg.Wait()
	took := time.Since(start)
	seen := map[netip.Addr]int{}
	var slowest time.Duration
	for i, o := range outs {
		for _, a := range resultAddrs(parseResult(t, "1.1.0", o.ok(t))) {
			if j, dup := seen[a]; dup {
				t.Errorf("containers %d and %d both got %v", j, i, a)
			}
			seen[a] = i
		}
		slowest = max(slowest, o.Took)
	}
	t.Logf("%d concurrent ADDs: %v in all, slowest %v", n, took, slowest)
	if len(seen) != n || len(e.agent.keys()) != n || len(e.state().Allocations) != n {
		t.Errorf("%d addresses, %d registrations, %d allocations; want %d each", len(seen), len(e.agent.keys()), len(e.state().Allocations), n)
	}
	if took > 60*time.Second {
		t.Errorf("%d concurrent ADDs took %v, want under 60 s", n, took)
	}
	for i := range n {
		wg.Go(func() {
			outs[i] = e.run(call{Command: "DEL", ContainerID: fmt.Sprintf("par%02d", i), NetNS: ws[i].Path(), IfName: "eth0", Stdin: conf})
		})
	}
	wg.Wait()
	for _, o := range outs {
		o.ok(t)
	}
	if st := e.state(); len(st.Allocations) != 0 || len(e.agent.keys()) != 0 {
		t.Errorf("after concurrent DELs: %d allocations, registrations %v", len(st.Allocations), e.agent.keys())
	}
}

// A runtime speaking an older version gets its result in that version.
func TestResultInOlderVersion(t *testing.T) {
	e := newHostEnv(t)
	w := nstest.NS(t, nsPrefix)
	conf := e.conf(map[string]any{"cniVersion": "0.4.0", "subnet6": "fd77::/64"})
	out := e.run(call{Command: "ADD", ContainerID: "old", NetNS: w.Path(), IfName: "eth0", Stdin: conf}).ok(t)
	var head struct {
		CNIVersion string `json:"cniVersion"`
	}
	if json.Unmarshal(out, &head); head.CNIVersion != "0.4.0" {
		t.Errorf("result version %q, want 0.4.0: %s", head.CNIVersion, out)
	}
	if got := resultAddrs(parseResult(t, "0.4.0", out)); len(got) != 2 {
		t.Errorf("0.4.0 result addresses %v, want two", got)
	}
	e.run(call{Command: "CHECK", ContainerID: "old", NetNS: w.Path(), IfName: "eth0", Stdin: withPrev(conf, out)}).ok(t)
	e.run(call{Command: "DEL", ContainerID: "old", NetNS: w.Path(), IfName: "eth0", Stdin: withPrev(conf, out)}).ok(t)
}
