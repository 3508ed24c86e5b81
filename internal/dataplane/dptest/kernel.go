package dptest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Prefix starts the name of every namespace the kernel harness creates.
const Prefix = "bhdp"

// DropTimeout is how long the kernel harness waits before it calls a
// connection attempt dropped.
const DropTimeout = 350 * time.Millisecond

// Kernel returns the harness of a kernel dataplane: every host is a
// throwaway network namespace in which newDataplane builds the dataplane
// under test, every workload a namespace attached to it by internal/attach,
// every connection a real socket made inside the source workload's
// namespace. It needs root: it skips t (fails it in CI) without.
func Kernel(t *testing.T, newDataplane func(hostNetNSPath string) (dataplane.Dataplane, error)) *KernelHarness {
	t.Helper()
	nstest.RequireRoot(t)
	sweepOnce.Do(sweepStale)
	return &KernelHarness{newDP: newDataplane}
}

var sweepOnce sync.Once

// sweepStale removes the namespaces that an earlier, killed run left:
// those with Prefix older than ten minutes (no test here runs that long,
// and a younger one may belong to another test binary running now).
func sweepStale() {
	entries, err := os.ReadDir(netns.Dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !strings.HasPrefix(e.Name(), Prefix) || time.Since(info.ModTime()) < 10*time.Minute {
			continue
		}
		_ = (&netns.NS{Name: e.Name()}).Delete()
	}
}

// KernelHarness is the harness Kernel returns.
type KernelHarness struct {
	newDP func(string) (dataplane.Dataplane, error)
}

// Name is "kernel".
func (*KernelHarness) Name() string { return "kernel" }

// NewHost makes a host namespace with a dataplane in it.
func (k *KernelHarness) NewHost(t *testing.T) Host { return k.NewKernelHost(t) }

// NewKernelHost is NewHost with the concrete type, for tests that reach
// into the namespaces (the attack tests).
func (k *KernelHarness) NewKernelHost(t *testing.T) *KernelHost {
	t.Helper()
	ns := nstest.NS(t, Prefix+"h")
	// The kernel rate-limits the ICMP errors a reject sends, per peer (a
	// burst of 6, then one a second): a test that makes many rejected
	// attempts from one workload would see drops. This host is ours.
	err := ns.Do(func() error {
		return errors.Join(netns.Sysctl("net/ipv4/icmp_ratelimit", "0"), netns.Sysctl("net/ipv6/icmp/ratelimit", "0"))
	})
	if err != nil {
		t.Fatalf("dptest: host %s: %v", ns.Name, err)
	}
	dp, err := k.newDP(ns.Path())
	if err != nil {
		t.Fatalf("dptest: new dataplane in %s: %v", ns.Name, err)
	}
	h := &KernelHost{t: t, NS: ns, dp: dp, eps: map[string]*kEndpoint{}, byAddr: map[netip.Addr]*kEndpoint{}}
	t.Cleanup(func() {
		h.closeServers()
		if err := dp.Close(); err != nil {
			t.Errorf("dptest: close dataplane: %v", err)
		}
	})
	return h
}

// KernelHost is a host of the kernel harness.
type KernelHost struct {
	t  *testing.T
	NS *netns.NS // the host namespace, where the dataplane enforces
	dp dataplane.Dataplane

	mu      sync.Mutex
	eps     map[string]*kEndpoint
	byAddr  map[netip.Addr]*kEndpoint
	closers []func()
}

type kEndpoint struct {
	Endpoint
	ns    *netns.NS
	iface string

	mu      sync.Mutex
	servers map[srvKey]*server
}

type srvKey struct {
	proto policy.Protocol
	port  int
}

// Dataplane returns the dataplane under test.
func (h *KernelHost) Dataplane() dataplane.Dataplane { return h.dp }

// Attach creates a namespace for e and attaches it to the host.
func (h *KernelHost) Attach(ctx context.Context, e Endpoint) (string, error) {
	ns := nstest.NS(h.t, Prefix+"w")
	iface := attach.HostIfName(ns.Name)
	return iface, h.add(e, ns, iface)
}

// AddOutside creates a namespace for e attached to the host on an
// interface whose name is not an attachment's ("bo…").
func (h *KernelHost) AddOutside(ctx context.Context, e Endpoint) error {
	ns := nstest.NS(h.t, Prefix+"o")
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return h.add(e, ns, "bo"+hex.EncodeToString(b))
}

func (h *KernelHost) add(e Endpoint, ns *netns.NS, iface string) error {
	h.mu.Lock()
	_, dup := h.eps[e.Name]
	h.mu.Unlock()
	if dup {
		return fmt.Errorf("dptest: endpoint %s exists", e.Name)
	}
	err := h.NS.Do(func() error {
		_, err := attach.Add(attach.Spec{HostIf: iface, NetNS: ns.Path(), IfName: "eth0", Addrs: e.Addrs})
		return err
	})
	if err != nil {
		return fmt.Errorf("dptest: attach %s: %w", e.Name, err)
	}
	// Ping sockets (ICMP echo without a raw socket) for every group.
	err = ns.Do(func() error { return netns.Sysctl("net/ipv4/ping_group_range", "0 2147483647") })
	if err != nil {
		return fmt.Errorf("dptest: %s: %w", e.Name, err)
	}
	ep := &kEndpoint{Endpoint: e, ns: ns, iface: iface, servers: map[srvKey]*server{}}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.eps[e.Name] = ep
	for _, a := range e.Addrs {
		h.byAddr[a] = ep
	}
	return nil
}

// EndpointNS returns the namespace of an endpoint, for tests that act
// inside it (as an attacker with root in its own namespace would).
func (h *KernelHost) EndpointNS(name string) *netns.NS {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ep := h.eps[name]; ep != nil {
		return ep.ns
	}
	return nil
}

// Listen makes sure a server of proto (TCP, UDP or SCTP) listens on port
// in the endpoint owning addr: TCP and SCTP accept and echo, UDP echoes
// and records what it received.
func (h *KernelHost) Listen(addr netip.Addr, proto policy.Protocol, port int) error {
	_, err := h.server(addr, proto, port)
	return err
}

func (h *KernelHost) endpoint(name string) (*kEndpoint, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ep := h.eps[name]; ep != nil {
		return ep, nil
	}
	return nil, fmt.Errorf("dptest: no endpoint %s", name)
}

func (h *KernelHost) server(addr netip.Addr, proto policy.Protocol, port int) (*server, error) {
	h.mu.Lock()
	ep := h.byAddr[addr]
	h.mu.Unlock()
	if ep == nil {
		return nil, fmt.Errorf("dptest: no endpoint owns %v", addr)
	}
	ep.mu.Lock()
	defer ep.mu.Unlock()
	k := srvKey{proto, port}
	if s := ep.servers[k]; s != nil {
		return s, nil
	}
	var s *server
	err := ep.ns.Do(func() error {
		var err error
		s, err = startServer(proto, port)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dptest: listen %v/%d in %s: %w", proto, port, ep.Name, err)
	}
	ep.servers[k] = s
	h.mu.Lock()
	h.closers = append(h.closers, s.close)
	h.mu.Unlock()
	return s, nil
}

func (h *KernelHost) closeServers() {
	h.mu.Lock()
	cs := h.closers
	h.closers = nil
	h.mu.Unlock()
	for _, c := range cs {
		c()
	}
}

// Supports reports whether the kernel carries p. SCTP needs the sctp
// module, which many kernels (this project's CI's among them) lack.
func (h *KernelHost) Supports(p policy.Protocol) error {
	if p == policy.SCTP {
		return sctpSupported()
	}
	return nil
}

// Try makes one real connection attempt from inside the source's
// namespace.
func (h *KernelHost) Try(ctx context.Context, tr Try) (Outcome, string, error) {
	src, err := h.endpoint(tr.From)
	if err != nil {
		return 0, "", err
	}
	timeout := tr.Timeout
	if timeout == 0 {
		timeout = DropTimeout
	}
	if tr.Spoof.IsValid() {
		return h.trySpoofed(src, tr, timeout)
	}
	var srv *server
	if tr.Protocol.HasPorts() {
		if srv, err = h.server(tr.To, tr.Protocol, tr.Port); err != nil {
			return 0, "", err
		}
	}
	var o Outcome
	var detail string
	err = src.ns.Do(func() error {
		var err error
		o, detail, err = dial(tr, timeout, srv)
		return err
	})
	return o, detail, err
}

// Open sets up a TCP or UDP connection and keeps it open.
func (h *KernelHost) Open(ctx context.Context, tr Try) (Conn, error) {
	src, err := h.endpoint(tr.From)
	if err != nil {
		return nil, err
	}
	if tr.Protocol != policy.TCP && tr.Protocol != policy.UDP {
		return nil, fmt.Errorf("dptest: open %v: %w", tr.Protocol, ErrUnsupported)
	}
	if _, err := h.server(tr.To, tr.Protocol, tr.Port); err != nil {
		return nil, err
	}
	timeout := tr.Timeout
	if timeout == 0 {
		timeout = DropTimeout
	}
	var c Conn
	err = src.ns.Do(func() error {
		var err error
		c, err = openConn(tr, timeout)
		return err
	})
	return c, err
}
