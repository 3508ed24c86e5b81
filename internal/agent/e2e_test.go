package agent

import (
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent/client"
	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

const e2ePolicy = `apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: shop}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  isolate: [ingress]
  ingress:
    - name: from-web
      action: allow
      from: [{selector: {matchLabels: {app: web}}}]
      services: [{protocol: tcp, port: 5432}]
`

// e2eWorkload is a workload namespace attached to the host namespace.
type e2eWorkload struct {
	ns   *netns.NS
	addr netip.Addr
	reg  api.WorkloadRegistration
}

func attachWorkload(t *testing.T, host *netns.NS, name, addr string, labels map[string]string) *e2eWorkload {
	t.Helper()
	w := &e2eWorkload{ns: nstest.NS(t, "bhag"), addr: netip.MustParseAddr(addr)}
	hostIf := attach.HostIfName(w.ns.Name)
	err := host.Do(func() error {
		_, err := attach.Add(attach.Spec{HostIf: hostIf, NetNS: w.ns.Path(), IfName: "eth0", Addrs: []netip.Addr{w.addr}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Do(func() error { return attach.Del(hostIf) }) })
	w.reg = api.WorkloadRegistration{Namespace: "shop", Name: name, Labels: labels, IPs: []string{addr}, Interface: hostIf}
	return w
}

// listen accepts TCP connections on port inside the workload, until t ends.
func (w *e2eWorkload) listen(t *testing.T, port int) {
	t.Helper()
	var ln net.Listener
	err := w.ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(w.addr, uint16(port)).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
}

// connects reports whether a TCP connection from w to addr:port gets
// through (a dropped SYN times out after 300 ms).
func (w *e2eWorkload) connects(t *testing.T, to *e2eWorkload, port int) bool {
	t.Helper()
	var err error
	w.ns.Do(func() error {
		var c net.Conn
		d := net.Dialer{Timeout: 300 * time.Millisecond}
		if c, err = d.Dial("tcp", netip.AddrPortFrom(to.addr, uint16(port)).String()); err == nil {
			c.Close()
		}
		return nil
	})
	var ne net.Error
	if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("connect %s -> %s:%d: %v (want success or a timeout)", w.reg.Name, to.addr, port, err)
	}
	return err == nil
}

// TestEndToEndWithTheKernel runs an agent on the nftables dataplane for a
// throwaway host namespace, attaches workloads to it with internal/attach,
// registers them through the client and checks real connections.
func TestEndToEndWithTheKernel(t *testing.T) {
	nstest.RequireRoot(t)
	host := nstest.NS(t, "bhag")
	t.Cleanup(func() { nft.Cleanup(host.Path()) })
	web := attachWorkload(t, host, "web", "10.77.0.1", map[string]string{"app": "web"})
	db := attachWorkload(t, host, "db", "10.77.0.2", map[string]string{"app": "db"})
	other := attachWorkload(t, host, "other", "10.77.0.3", map[string]string{"app": "other"})
	db.listen(t, 5432)
	db.listen(t, 6000)

	dir := shortDir(t)
	sock := filepath.Join(dir, "agent.sock")
	start := func() *Agent {
		dp, err := nft.New(nft.Options{NetNS: host.Path()})
		if err != nil {
			t.Fatal(err)
		}
		a, err := Start(ctx, Options{StateDir: filepath.Join(dir, "state"), Socket: sock, Host: "h1", Dataplane: dp})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	a := start()
	defer func() { a.Close() }()
	c, err := client.New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []*e2eWorkload{web, db} {
		if _, err := c.RegisterWorkload(ctx, w.reg); err != nil {
			t.Fatal(err)
		}
	}
	if !web.connects(t, db, 6000) {
		t.Fatal("web -> db:6000 blocked before any policy")
	}
	res, err := c.Apply(ctx, api.ApplyRequest{Documents: []api.Document{{Name: "db.yaml", Data: e2ePolicy}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("apply to enforced: %d µs", res.EnforcedMicros)
	if !web.connects(t, db, 5432) {
		t.Error("web -> db:5432 blocked, want allowed")
	}
	if web.connects(t, db, 6000) {
		t.Error("web -> db:6000 allowed, want denied")
	}
	// A workload registered now is under the policy from its first packet.
	t0 := time.Now()
	if _, err := c.RegisterWorkload(ctx, other.reg); err != nil {
		t.Fatal(err)
	}
	t.Logf("registration to enforced: %v", time.Since(t0))
	if other.connects(t, db, 5432) {
		t.Error("other -> db:5432 allowed right after registering, want denied")
	}

	// The agent stops; enforcement stays. A new agent adopts it from the
	// state dir and keeps enforcing.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if web.connects(t, db, 6000) || !web.connects(t, db, 5432) {
		t.Error("enforcement changed when the agent stopped")
	}
	a = start()
	if !web.connects(t, db, 5432) || web.connects(t, db, 6000) || other.connects(t, db, 5432) {
		t.Error("the restarted agent does not enforce the policy it had")
	}
	if err := c.UnregisterWorkload(ctx, "shop", "other"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Delete(ctx, api.ApplyRequest{Documents: []api.Document{{Name: "db.yaml", Data: e2ePolicy}}}); err != nil {
		t.Fatal(err)
	}
	if !web.connects(t, db, 6000) {
		t.Error("web -> db:6000 still blocked after the policy was deleted")
	}
	st, err := c.Status(ctx)
	if err != nil || len(st.Features) == 0 {
		t.Errorf("status: %+v, %v", st, err)
	}
	var dump strings.Builder
	if err := nft.DumpNS(host.Path(), &dump); err != nil || !strings.Contains(dump.String(), "table inet bulkhead") {
		t.Errorf("dump: %v\n%.400s", err, dump.String())
	}
}
