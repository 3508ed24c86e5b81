package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// The defects of issues 9 and 10, each as the reproducer the issue
// describes, with the real plugin binary, real namespaces and (where the
// agent's answer matters) the real agent.

// defPrefix names the namespaces these tests create.
const defPrefix = "bhcd"

// newDefectEnv is newBareHostEnv with this file's namespace prefix.
func newDefectEnv(t *testing.T) *hostEnv {
	t.Helper()
	nstest.RequireRoot(t)
	nstest.RequireCommand(t, "ip")
	dir := t.TempDir()
	return &hostEnv{t: t, host: nstest.NS(t, defPrefix), socket: filepath.Join(dir, "agent.sock"), dataDir: filepath.Join(dir, "data")}
}

// serveTCP accepts connections on addr:port inside w until the test ends.
func serveTCP(t *testing.T, w *netns.NS, addr string, port int) {
	t.Helper()
	var ln net.Listener
	if err := w.Do(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(addr, fmt.Sprint(port)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func dialFrom(w *netns.NS, addr string, port int, timeout time.Duration) error {
	return w.Do(func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, fmt.Sprint(port)), timeout)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func labelled(e *hostEnv, app string, extra map[string]any) []byte {
	m := map[string]any{"args": map[string]any{
		"cni":      map[string]any{"labels": []map[string]string{{"key": "app", "value": app}}},
		"bulkhead": map[string]any{"ports": []map[string]any{{"name": "pg", "port": 5432}}},
	}}
	for k, v := range extra {
		m[k] = v
	}
	return e.conf(m)
}

// Issue 10, security defect 1: the agent enforces in namespace A, the
// runtime runs the plugin in namespace B. ADD used to succeed and the
// agent to report the workloads enforced while nothing judged their
// traffic. ADD must fail, leave nothing behind, and STATUS and CHECK in B
// must say why.
func TestAgentEnforcingInAnotherNamespace(t *testing.T) {
	e := newDefectEnv(t) // B: where the plugin runs
	agentNS := nstest.NS(t, defPrefix)
	dp, err := nft.New(nft.Options{NetNS: agentNS.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nft.Cleanup(agentNS.Path()) })
	a := startRealAgent(t, e, dp)
	db, other := nstest.NS(t, defPrefix), nstest.NS(t, defPrefix)
	add := func(id string, w *netns.NS, app string) outcome {
		return e.run(call{Command: "ADD", ContainerID: id, NetNS: w.Path(), IfName: "eth0",
			Args: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=" + id, Stdin: labelled(e, app, nil)})
	}
	o1, o2 := add("db-0", db, "db"), add("other-0", other, "other")
	if o1.Err == nil && o2.Err == nil {
		dbAddr := resultAddrs(parseResult(t, "1.1.0", o1.Stdout))[0].String()
		serveTCP(t, db, dbAddr, 5432)
		if dialFrom(other, dbAddr, 5432, time.Second) == nil {
			t.Fatalf("fail-open: ADD succeeded in a namespace the agent does not enforce in, the agent holds %d workloads, "+
				"and other -> db:5432, which the policy denies, connected", len(a.Workloads()))
		}
		t.Fatal("ADD succeeded in a namespace the agent does not enforce in")
	}
	for _, o := range []outcome{o1, o2} {
		ce := o.cniErr(t)
		if ce.Code != CodeWrongNamespace || !strings.Contains(ce.Details, "enforces in network namespace") {
			t.Errorf("ADD = %d %s, want %d naming both namespaces", ce.Code, ce.Details, CodeWrongNamespace)
		}
	}
	if n := len(a.Workloads()); n != 0 {
		t.Errorf("the agent holds %d workloads, want none", n)
	}
	e.nothingLeft(t, db, "db-0")
	e.nothingLeft(t, other, "other-0")

	ce := e.run(call{Command: "STATUS", Stdin: e.conf(nil)}).cniErr(t)
	if ce.Code != CodeNotAvailable || !strings.Contains(ce.Details, "enforces in network namespace") {
		t.Errorf("STATUS = %d %s, want 50 naming the namespaces", ce.Code, ce.Details)
	}

	// Attached where the agent enforces, CHECK passes there and fails
	// in B, saying why.
	agentHost := &hostEnv{t: t, host: agentNS, socket: e.socket, dataDir: e.dataDir}
	w := nstest.NS(t, defPrefix)
	conf := labelled(e, "web", nil)
	out := agentHost.run(call{Command: "ADD", ContainerID: "web-0", NetNS: w.Path(), IfName: "eth0", Args: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0", Stdin: conf}).ok(t)
	agentHost.run(call{Command: "CHECK", ContainerID: "web-0", NetNS: w.Path(), IfName: "eth0", Stdin: withPrev(conf, out)}).ok(t)
	agentHost.run(call{Command: "STATUS", Stdin: conf}).ok(t)
	ce = e.run(call{Command: "CHECK", ContainerID: "web-0", NetNS: w.Path(), IfName: "eth0", Stdin: withPrev(conf, out)}).cniErr(t)
	if ce.Code != CodeCheckFailed || !strings.Contains(ce.Details, "enforces in network namespace") {
		t.Errorf("CHECK from another namespace = %d %s, want 105 naming the namespaces", ce.Code, ce.Details)
	}
	agentHost.run(call{Command: "DEL", ContainerID: "web-0", IfName: "eth0", Stdin: conf}).ok(t)
}

// Issue 10, security defect 2: two networks with the same subnet each
// allocate the first address. The second ADD used to replace the first
// container's host route, be refused by the agent, and delete its veth
// with the route: the first container unreachable. Now the second
// network's ADD skips the addresses the agent holds, a request for a held
// address fails with 100 naming the holder, and the first container
// stays exactly as it was.
func TestOverlappingSubnetsLeaveOtherWorkloadsAlone(t *testing.T) {
	e := newDefectEnv(t)
	dp, err := nft.New(nft.Options{NetNS: e.host.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nft.Cleanup(e.host.Path()) })
	startRealAgent(t, e, dp)
	db, web, db2, db3 := nstest.NS(t, defPrefix), nstest.NS(t, defPrefix), nstest.NS(t, defPrefix), nstest.NS(t, defPrefix)
	out := e.run(call{Command: "ADD", ContainerID: "db-0", NetNS: db.Path(), IfName: "eth0", Args: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=db-0", Stdin: labelled(e, "db", nil)}).ok(t)
	dbAddr := resultAddrs(parseResult(t, "1.1.0", out))[0].String()
	e.run(call{Command: "ADD", ContainerID: "web-0", NetNS: web.Path(), IfName: "eth0", Args: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0", Stdin: labelled(e, "web", nil)}).ok(t)
	serveTCP(t, db, dbAddr, 5432)
	if err := dialFrom(web, dbAddr, 5432, 3*time.Second); err != nil {
		t.Fatalf("web -> db:5432 before the second network: %v", err)
	}
	routeBefore := nstest.Run(t, e.host, "ip", "route", "get", dbAddr)

	// The second network, same subnet, its own IPAM state.
	other := map[string]any{"name": "bhnet2"}
	out = e.run(call{Command: "ADD", ContainerID: "db-1", NetNS: db2.Path(), IfName: "eth0", Args: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=db-1", Stdin: labelled(e, "db", other)}).ok(t)
	if got := resultAddrs(parseResult(t, "1.1.0", out))[0].String(); got == dbAddr {
		t.Errorf("the second network handed out %s, which db-0 holds", got)
	}
	withIP := map[string]any{"name": "bhnet2", "runtimeConfig": map[string]any{"ips": []string{dbAddr}}}
	ce := e.run(call{Command: "ADD", ContainerID: "db-2", NetNS: db3.Path(), IfName: "eth0", Args: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=db-2",
		Stdin: labelled(e, "db", withIP)}).cniErr(t)
	if ce.Code != CodeAddressUnavailable || !strings.Contains(ce.Details, "shop/db-0") {
		t.Errorf("ADD requesting db-0's address on the second network = %d %s, want 100 naming shop/db-0", ce.Code, ce.Details)
	}
	if got := nstest.Run(t, e.host, "ip", "route", "get", dbAddr); got != routeBefore {
		t.Errorf("db-0's host route changed:\nbefore %s\nafter  %s", routeBefore, got)
	}
	if err := dialFrom(web, dbAddr, 5432, 3*time.Second); err != nil {
		t.Errorf("web -> db-0:5432 after the second network's ADDs: %v; a failed ADD broke another workload", err)
	}
}

// A host route to the address already present (another workload's, or
// one an operator made) fails attach.Add with ErrRouteExists, and the
// route stays as it was.
func TestAttachNeverReplacesAHostRoute(t *testing.T) {
	e := newDefectEnv(t)
	w1, w2 := nstest.NS(t, defPrefix), nstest.NS(t, defPrefix)
	addr := mustAddr("10.77.3.3")
	err := e.host.Do(func() error {
		if _, err := attach.Add(attach.Spec{HostIf: "bhcdtest1", NetNS: w1.Path(), IfName: "eth0", Addrs: []netip.Addr{addr}}); err != nil {
			return err
		}
		_, err := attach.Add(attach.Spec{HostIf: "bhcdtest2", NetNS: w2.Path(), IfName: "eth0", Addrs: []netip.Addr{addr}})
		if !errors.Is(err, attach.ErrRouteExists) {
			return fmt.Errorf("second attach of %v = %v, want ErrRouteExists", addr, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := nstest.Run(t, e.host, "ip", "route", "get", addr.String()); !strings.Contains(got, "dev bhcdtest1") {
		t.Errorf("route to %v is now %s, want dev bhcdtest1", addr, got)
	}
	if strings.Contains(e.hostLinks(), "bhcdtest2") {
		t.Error("the failed attach left its veth")
	}
}

// Issue 9: CNI_NETNS naming a FIFO hung the plugin in open(). Anything
// that is not a network namespace is refused at once.
func TestNetNSThatIsNotANamespace(t *testing.T) {
	e := newDefectEnv(t)
	e.agent = startFakeAgent(t, e.socket)
	dir := t.TempDir()
	fifo, file := filepath.Join(dir, "fifo"), filepath.Join(dir, "file")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(file, nil, 0o600)
	for _, c := range []struct{ path, want string }{
		{fifo, "FIFO"},
		{file, "nsfs"},
		{dir, "directory"},
		{"/proc/self/ns/mnt", "another kind"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		for _, cmd := range []string{"ADD", "CHECK"} {
			o := e.run(call{Command: cmd, ContainerID: "c1", NetNS: c.path, IfName: "eth0", Stdin: e.conf(nil)})
			if ce := o.cniErr(t); !strings.Contains(ce.Details, c.want) || o.Took > 10*time.Second {
				t.Errorf("%s with CNI_NETNS %s = %d %s after %v, want an error at once saying %q", cmd, c.path, ce.Code, ce.Details, o.Took, c.want)
			}
		}
		// DEL has nothing to do in a namespace that is not one, and
		// succeeds without opening it.
		o := e.run(call{Command: "DEL", ContainerID: "c1", NetNS: c.path, IfName: "eth0", Stdin: e.conf(nil)})
		o.ok(t)
		if o.Took > 10*time.Second {
			t.Errorf("DEL with CNI_NETNS %s took %v", c.path, o.Took)
		}
	}
	if n := len(e.agent.keys()); n != 0 || len(e.state().Allocations) != 0 {
		t.Errorf("refused ADDs left %d registrations, %d allocations", n, len(e.state().Allocations))
	}
}

// Issue 9: an ADD that reuses another container's namespace/name used to
// replace its registration; a later DEL of the newer container left the
// older attached but unregistered. The duplicate is refused; the older
// stays registered through the newer's DEL.
func TestDuplicateWorkloadNameRefused(t *testing.T) {
	e := newDefectEnv(t)
	a := startRealAgent(t, e, dataplane.NewUserspace())
	w1, w2 := nstest.NS(t, defPrefix), nstest.NS(t, defPrefix)
	args := "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0"
	e.run(call{Command: "ADD", ContainerID: "c1", NetNS: w1.Path(), IfName: "eth0", Args: args, Stdin: labelled(e, "web", nil)}).ok(t)
	ce := e.run(call{Command: "ADD", ContainerID: "c2", NetNS: w2.Path(), IfName: "eth0", Args: args, Stdin: labelled(e, "web", nil)}).cniErr(t)
	if ce.Code != CodeAgentRefused || !strings.Contains(ce.Details, "registered already") || !strings.Contains(ce.Details, attach.HostIfName("c1/eth0")) {
		t.Errorf("ADD of a second container as shop/web-0 = %d %s, want 102 naming the first's interface", ce.Code, ce.Details)
	}
	e.nothingLeft(t, w2, "c2")
	e.run(call{Command: "DEL", ContainerID: "c2", IfName: "eth0", Stdin: e.conf(nil)}).ok(t)
	regs := a.Workloads()
	if len(regs) != 1 || regs[0].ContainerID != "c1" || regs[0].Interface != attach.HostIfName("c1/eth0") {
		t.Errorf("after the refused duplicate and its DEL the agent holds %+v, want c1's registration", regs)
	}
}

// Issue 9: one oversized label set from a CNI configuration made the
// manager answer 500. The plugin refuses it with a clear error before
// anything is created, and nothing reaches the agent.
func TestOversizedLabelsRefused(t *testing.T) {
	e := newDefectEnv(t)
	e.agent = startFakeAgent(t, e.socket)
	w := nstest.NS(t, defPrefix)
	many := make([]map[string]string, 200000)
	for i := range many {
		many[i] = map[string]string{"key": fmt.Sprintf("k%d", i), "value": "v"}
	}
	conf := e.conf(map[string]any{"args": map[string]any{"cni": map[string]any{"labels": many}}})
	ce := e.run(call{Command: "ADD", ContainerID: "c1", NetNS: w.Path(), IfName: "eth0", Stdin: conf}).cniErr(t)
	if ce.Code != CodeInvalidConfig || !strings.Contains(ce.Details, "too many labels: 200000; at most 64") || len(ce.Details) > 1000 {
		t.Errorf("ADD with 200000 labels = %d %.300s (%d bytes), want 7 saying how many are allowed, briefly", ce.Code, ce.Details, len(ce.Details))
	}
	if len(e.agent.registered) != 0 {
		t.Error("the oversized label set reached the agent")
	}
	e.nothingLeft(t, w, "c1")
}

// Issue 10: DEL must not fail on checks that only ADD needs: with
// `--network net:ip=A,ip=B` (two IPv4 addresses) ADD is refused, and DEL
// of the same configuration must succeed, or a runtime that retries DEL
// stays stuck.
func TestDelIgnoresWhatOnlyAddChecks(t *testing.T) {
	e := newDefectEnv(t)
	e.agent = startFakeAgent(t, e.socket)
	w := nstest.NS(t, defPrefix)
	conf := e.conf(map[string]any{
		"runtimeConfig": map[string]any{"ips": []string{"10.77.0.5", "10.77.0.6"}},
		"args":          map[string]any{"cni": map[string]any{"labels": "not a list"}},
		"mtu":           1,
	})
	if ce := e.run(call{Command: "ADD", ContainerID: "c1", NetNS: w.Path(), IfName: "eth0", Stdin: conf}).cniErr(t); ce.Code != CodeInvalidConfig {
		t.Errorf("ADD = %d %s, want 7", ce.Code, ce.Details)
	}
	e.run(call{Command: "DEL", ContainerID: "c1", NetNS: w.Path(), IfName: "eth0", Stdin: conf}).ok(t)
	// What DEL itself needs is still checked: a network name that would
	// leave dataDir.
	bad := e.conf(map[string]any{"name": "../../etc"})
	if ce := e.run(call{Command: "DEL", ContainerID: "c1", IfName: "eth0", Stdin: bad}).cniErr(t); ce.Code != CodeInvalidConfig || !strings.Contains(ce.Msg+ce.Details, "name") {
		t.Errorf("DEL with name ../../etc = %d %s, want 7", ce.Code, ce.Details)
	}
}

// An address the host routes already (a route an operator made, or
// another network's ADD that ran at the same moment) is never taken
// over: ADD allocates another one, a request for it fails with 100, and
// the route stays.
func TestAddSkipsAnAddressTheHostRoutes(t *testing.T) {
	e := newDefectEnv(t)
	e.agent = startFakeAgent(t, e.socket)
	nstest.Run(t, e.host, "ip", "link", "add", "bhcddum0", "type", "veth", "peer", "name", "bhcddum1")
	nstest.Run(t, e.host, "ip", "link", "set", "bhcddum0", "up")
	nstest.Run(t, e.host, "ip", "route", "add", "10.77.0.1/32", "dev", "bhcddum0")
	w1, w2 := nstest.NS(t, defPrefix), nstest.NS(t, defPrefix)
	out := e.run(call{Command: "ADD", ContainerID: "c1", NetNS: w1.Path(), IfName: "eth0", Stdin: e.conf(nil)}).ok(t)
	if got := resultAddrs(parseResult(t, "1.1.0", out))[0]; got != mustAddr("10.77.0.2") {
		t.Errorf("ADD got %v, want 10.77.0.2: 10.77.0.1 is routed to bhcddum0", got)
	}
	req := e.conf(map[string]any{"runtimeConfig": map[string]any{"ips": []string{"10.77.0.1"}}})
	ce := e.run(call{Command: "ADD", ContainerID: "c2", NetNS: w2.Path(), IfName: "eth0", Stdin: req}).cniErr(t)
	if ce.Code != CodeAddressUnavailable || !strings.Contains(ce.Details, "routed to bhcddum0") {
		t.Errorf("ADD requesting 10.77.0.1 = %d %s, want 100 naming bhcddum0", ce.Code, ce.Details)
	}
	e.nothingLeft(t, w2, "c2")
	if got := nstest.Run(t, e.host, "ip", "route", "get", "10.77.0.1"); !strings.Contains(got, "dev bhcddum0") {
		t.Errorf("the route to 10.77.0.1 is now %s", got)
	}
}

// A second Bulkhead interface in one container (a second network) is
// refused with a clear error, and the first stays intact: its routes in
// the container, its registration, its CHECK.
func TestSecondInterfaceInOneContainerRefused(t *testing.T) {
	e := newDefectEnv(t)
	e.agent = startFakeAgent(t, e.socket)
	w := nstest.NS(t, defPrefix)
	conf := e.conf(nil)
	out := e.run(call{Command: "ADD", ContainerID: "c1", NetNS: w.Path(), IfName: "eth0", Stdin: conf}).ok(t)
	routes := nstest.Run(t, w, "ip", "route", "show")
	second := e.conf(map[string]any{"name": "bhnet2", "subnet": "10.78.0.0/16"})
	ce := e.run(call{Command: "ADD", ContainerID: "c1", NetNS: w.Path(), IfName: "eth1", Stdin: second}).cniErr(t)
	if ce.Code != CodeInterface || !strings.Contains(ce.Details, "one Bulkhead interface per container") {
		t.Errorf("second interface = %d %s, want 103 saying one interface per container", ce.Code, ce.Details)
	}
	if got := nstest.Run(t, w, "ip", "route", "show"); got != routes {
		t.Errorf("the container's routes changed:\nbefore %s\nafter  %s", routes, got)
	}
	if strings.Contains(nstest.Run(t, w, "ip", "-o", "link", "show"), "eth1") || strings.Contains(e.hostLinks(), attach.HostIfName("c1/eth1")) {
		t.Error("the refused second interface left its veth")
	}
	e.run(call{Command: "CHECK", ContainerID: "c1", NetNS: w.Path(), IfName: "eth0", Stdin: withPrev(conf, out)}).ok(t)
	if _, ok := e.agent.get("default/c1"); !ok {
		t.Error("the first interface's registration is gone")
	}
}

// A container killed without DEL (its namespace removed, and with it its
// veth) leaves its registration behind; a new container under the same
// name takes it over instead of being refused for good, and the old
// one's late DEL leaves the new registration alone. While the first
// container's interface exists, the same ADD is refused.
func TestNameOfAGoneContainerIsFree(t *testing.T) {
	e := newDefectEnv(t)
	dp, err := nft.New(nft.Options{NetNS: e.host.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nft.Cleanup(e.host.Path()) })
	a := startRealAgent(t, e, dp)
	w1, w2 := nstest.NS(t, defPrefix), nstest.NS(t, defPrefix)
	args := "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0"
	e.run(call{Command: "ADD", ContainerID: "c1", NetNS: w1.Path(), IfName: "eth0", Args: args, Stdin: labelled(e, "web", nil)}).ok(t)
	if ce := e.run(call{Command: "ADD", ContainerID: "c2", NetNS: w2.Path(), IfName: "eth0", Args: args, Stdin: labelled(e, "web", nil)}).cniErr(t); ce.Code != CodeAgentRefused {
		t.Fatalf("ADD of c2 as shop/web-0 while c1 lives = %d %s, want 102", ce.Code, ce.Details)
	}
	if err := w1.Delete(); err != nil {
		t.Fatal(err)
	}
	// The kernel removes the namespace, and its veth, asynchronously.
	gone := attach.HostIfName("c1/eth0")
	for deadline := time.Now().Add(10 * time.Second); strings.Contains(e.hostLinks(), gone); {
		if time.Now().After(deadline) {
			t.Fatalf("%s still exists 10 s after its namespace was removed", gone)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.run(call{Command: "ADD", ContainerID: "c2", NetNS: w2.Path(), IfName: "eth0", Args: args, Stdin: labelled(e, "web", nil)}).ok(t)
	e.run(call{Command: "DEL", ContainerID: "c1", IfName: "eth0", Stdin: e.conf(nil)}).ok(t)
	regs := a.Workloads()
	if len(regs) != 1 || regs[0].ContainerID != "c2" {
		t.Errorf("the agent holds %+v, want shop/web-0 from c2", regs)
	}
}
