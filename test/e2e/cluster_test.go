package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/agent/ask"
	"github.com/bulkhead-dev/bulkhead/internal/agent/feed"
	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/manager"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

// prefix names every namespace these tests create.
const prefix = "bhupe"

// cluster is a manager and hosts joined by a routed underlay: a bridge
// in an underlay namespace, one veth from each host namespace to it.
type cluster struct {
	t      *testing.T
	prefix string // names the namespaces this cluster creates
	// escalateTimeout is how long the agents hold an escalated
	// connection (0: ask.DefaultTimeout).
	escalateTimeout time.Duration
	dir             string
	log             *slog.Logger
	st              *boltstore.Store
	m               *manager.Manager
	addr            string
	admin           *client.Client
	under           *netns.NS
	hosts           map[string]*node
	wls             map[string]*workload
	closer          []func()
}

// node is one host: its namespace, its underlay address, its agent.
type node struct {
	name   string
	ns     *netns.NS
	ip     netip.Addr
	dir    string
	a      *agent.Agent
	f      *feed.Follower
	ask    *ask.Asker
	online bool
}

// workload is a namespace attached to a host, with TCP servers.
type workload struct {
	namespace, name string
	host            *node
	ns              *netns.NS
	ip              netip.Addr
	iface           string
}

func newCluster(t *testing.T) *cluster { return newClusterNamed(t, prefix) }

// newClusterNamed is newCluster with its namespaces named by prefix p.
func newClusterNamed(t *testing.T, p string) *cluster {
	t.Helper()
	nstest.RequireRoot(t)
	nstest.RequireCommand(t, "ip")
	c := &cluster{t: t, prefix: p, dir: t.TempDir(), hosts: map[string]*node{}, wls: map[string]*workload{},
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if testing.Verbose() {
		c.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	t.Cleanup(c.close)
	st, err := boltstore.Open(filepath.Join(c.dir, "bulkhead.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.st = st
	c.startManager("127.0.0.1:0")
	c.under = nstest.NS(t, c.prefix+"u")
	nstest.Run(t, c.under, "ip", "link", "add", "br0", "type", "bridge")
	nstest.Run(t, c.under, "ip", "link", "set", "br0", "up")
	return c
}

func (c *cluster) close() {
	for i := len(c.closer) - 1; i >= 0; i-- {
		c.closer[i]()
	}
	for _, h := range c.hosts {
		c.stopAgent(h)
	}
	if c.m != nil {
		c.m.Close()
	}
	if c.st != nil {
		c.st.Close()
	}
}

func (c *cluster) startManager(listen string) {
	c.t.Helper()
	m, err := manager.Start(context.Background(), manager.Config{Store: c.st, DataDir: c.dir, Listen: listen,
		Heartbeat: time.Second, Logger: c.log.With("component", "manager")})
	if err != nil {
		c.t.Fatal(err)
	}
	c.m, c.addr = m, m.Addr().String()
	if c.admin, err = client.New(client.Config{URL: m.URL(), CA: m.CAPEM(), Token: m.AdminToken()}); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) stopManager() {
	c.m.Close()
	c.m = nil
}

func (c *cluster) url() string { return "https://" + c.addr }

// addHost makes a host namespace on the underlay with address ip, joins
// it to the manager and starts its agent.
func (c *cluster) addHost(name, ip string) *node {
	t := c.t
	t.Helper()
	h := &node{name: name, ns: nstest.NS(t, c.prefix+"h"), ip: netip.MustParseAddr(ip), dir: filepath.Join(c.dir, name)}
	peer := "ul" + name
	nstest.Run(t, h.ns, "ip", "link", "add", "ul0", "type", "veth", "peer", "name", peer, "netns", c.under.Name)
	nstest.Run(t, c.under, "ip", "link", "set", peer, "master", "br0", "up")
	nstest.Run(t, h.ns, "ip", "addr", "add", ip+"/24", "dev", "ul0")
	nstest.Run(t, h.ns, "ip", "link", "set", "ul0", "up")
	jt, err := c.admin.CreateJoinToken(context.Background(), name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := feed.Join(context.Background(), filepath.Join(h.dir, "manager"), c.url(), nil, jt.CAHash, jt.Secret, name); err != nil {
		t.Fatal(err)
	}
	c.hosts[name] = h
	c.startAgent(h)
	return h
}

// startAgent starts the host's agent (nftables in its namespace) and its
// follower, as `bulkhead agent --manager` does.
func (c *cluster) startAgent(h *node) {
	t := c.t
	t.Helper()
	dp, err := nft.New(nft.Options{NetNS: h.ns.Path(), Logger: c.log})
	if err != nil {
		t.Fatal(err)
	}
	log := c.log.With("host", h.name)
	a, err := agent.Start(context.Background(), agent.Options{StateDir: filepath.Join(h.dir, "state"), Host: h.name,
		Dataplane: dp, Manager: c.url(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	f, err := feed.Start(context.Background(), feed.Options{Agent: a, URL: c.url(), Dir: filepath.Join(h.dir, "manager"),
		HostIP: h.ip, Routes: feed.NewRoutes(h.ns.Path(), log), Logger: log,
		Backoff: func(n int) time.Duration { return min(100*time.Millisecond<<n, time.Second) }})
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	as, err := ask.Start(ask.Options{Agent: a, URL: c.url(), Dir: filepath.Join(h.dir, "manager"), NetNS: h.ns.Path(),
		Timeout: c.escalateTimeout, Logger: log})
	if err != nil {
		f.Close()
		a.Close()
		t.Fatal(err)
	}
	h.a, h.f, h.ask, h.online = a, f, as, true
}

// stopAgent stops the agent; its enforcement stays in the kernel.
func (c *cluster) stopAgent(h *node) {
	if h.online {
		h.ask.Close()
		h.f.Close()
		h.a.Close()
		h.online = false
	}
}

// addWorkload attaches a workload namespace to host h, registers it with
// h's agent (returning once its policy is enforced) and serves TCP on
// ports inside it.
func (c *cluster) addWorkload(h *node, namespace, name, ip string, labels map[string]string, ports map[string]int) *workload {
	t := c.t
	t.Helper()
	w := &workload{namespace: namespace, name: name, host: h, ns: nstest.NS(t, c.prefix+"w"), ip: netip.MustParseAddr(ip)}
	w.iface = attach.HostIfName(w.ns.Name)
	err := h.ns.Do(func() error {
		_, err := attach.Add(attach.Spec{HostIf: w.iface, NetNS: w.ns.Path(), IfName: "eth0", Addrs: []netip.Addr{w.ip}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := api.WorkloadRegistration{Namespace: namespace, Name: name, Labels: labels, IPs: []string{ip}, Interface: w.iface}
	for pn, p := range ports {
		reg.Ports = append(reg.Ports, api.NamedPort{Name: pn, Port: p, Protocol: "TCP"})
		c.serve(w, p)
	}
	if _, err := h.a.RegisterWorkload(context.Background(), reg); err != nil {
		t.Fatal(err)
	}
	c.wls[name] = w
	return w
}

// serve accepts TCP connections on port inside w (the socket is made
// there) and answers each with one line.
func (c *cluster) serve(w *workload, port int) {
	var ln net.Listener
	err := w.ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(w.ip, uint16(port)).String())
		return err
	})
	if err != nil {
		c.t.Fatal(err)
	}
	var wg sync.WaitGroup
	c.closer = append(c.closer, func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(conn, "%s\n", w.name)
			conn.Close()
		}
	}()
}

// dial connects from one workload to another's port, from inside the
// source's namespace, and reads the answer.
func (c *cluster) dial(from, to string, port int, timeout time.Duration) error {
	src, dst := c.wls[from], c.wls[to]
	return src.ns.Do(func() error {
		conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst.ip, uint16(port)).String(), timeout)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(timeout))
		buf := make([]byte, 64)
		n, err := conn.Read(buf)
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		if got := strings.TrimSpace(string(buf[:n])); got != to {
			return fmt.Errorf("answered by %q, not %s", got, to)
		}
		return nil
	})
}

// expect checks one connection: allowed (connects within 3 s) or denied
// (does not connect within 700 ms).
func (c *cluster) expect(what string, allowed bool, from, to string, port int) {
	c.t.Helper()
	if allowed {
		if err := c.dial(from, to, port, 3*time.Second); err != nil {
			c.t.Errorf("%s: %s -> %s:%d: %v, want connected", what, from, to, port, err)
		}
		return
	}
	if err := c.dial(from, to, port, 700*time.Millisecond); err == nil {
		c.t.Errorf("%s: %s -> %s:%d connected, want denied", what, from, to, port)
	}
}

// converged waits until every online host holds every other host's
// workloads and routes to them.
func (c *cluster) converged(timeout time.Duration) {
	t := c.t
	t.Helper()
	end := time.Now().Add(timeout)
	for {
		missing := ""
		for _, h := range c.hosts {
			if !h.online {
				continue
			}
			held := map[string]bool{}
			for _, it := range h.a.Objects("Workload").Items {
				m, _ := it["metadata"].(map[string]any)
				held[fmt.Sprint(m["name"])] = true
			}
			for _, w := range c.wls {
				if w.host != h && !held[w.name] {
					missing = fmt.Sprintf("host %s does not hold %s", h.name, w.name)
				}
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("not converged after %s: %s", timeout, missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// counter sums the counters of host h's rules whose id ends with suffix.
func (c *cluster) counter(h *node, suffix string) uint64 {
	c.t.Helper()
	cs, err := h.a.Counters(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	var n uint64
	for id, v := range cs.Rules {
		if strings.HasSuffix(id, suffix) {
			n += v.Packets
		}
	}
	for name, v := range cs.Walls {
		if name == suffix {
			n += v.Packets
		}
	}
	return n
}

func (c *cluster) apply(wait string, docs ...api.Document) api.ManagerApplyResult {
	c.t.Helper()
	res, err := c.admin.Apply(context.Background(), api.ManagerApplyRequest{Documents: docs, Wait: wait})
	if err != nil {
		c.t.Fatal(err)
	}
	return res
}

func readDir(t *testing.T, dir string) []api.Document {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	var out []api.Document
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, api.Document{Name: f, Data: string(data)})
	}
	return out
}
