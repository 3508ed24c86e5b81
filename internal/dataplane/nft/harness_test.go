package nft

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/load"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// prefix names every namespace these tests create; BULKHEAD_NS_PREFIX
// (at most 5 characters) replaces it, for a run beside another's.
var prefix = func() string {
	if p := os.Getenv("BULKHEAD_NS_PREFIX"); p != "" {
		return p
	}
	return "bhnf"
}()

// removeStale removes the namespaces of earlier runs that died without
// cleaning up. Only old ones: another run of this package (the
// conformance suite's, say) may be going on right now.
func removeStale(prefix string, age time.Duration) {
	entries, err := os.ReadDir(netns.Dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !strings.HasPrefix(e.Name(), prefix) || time.Since(info.ModTime()) < age {
			continue
		}
		if n, err := netns.Open(e.Name()); err == nil {
			_ = n.Delete()
		}
	}
}

// testHost is a throwaway host namespace with workloads attached to it
// by routed veths, as the agent would attach them.
type testHost struct {
	t    *testing.T
	ns   *netns.NS
	wls  map[string]*testWorkload
	atts []dataplane.Attachment
	prev *compile.State // the last State compiled: the next is compiled from it, as an agent's are
}

type testWorkload struct {
	name   string
	ns     *netns.NS
	v4, v6 netip.Addr
	hostIf string
}

// newTestHost attaches one workload per name: the i-th gets 10.77.0.i+1
// and fd77::i+1.
func newTestHost(t *testing.T, names ...string) *testHost {
	t.Helper()
	return newTestHostNamed(t, prefix, names...)
}

// newTestHostNamed is newTestHost with the namespaces named pfx….
func newTestHostNamed(t *testing.T, pfx string, names ...string) *testHost {
	t.Helper()
	nstest.RequireRoot(t)
	h := &testHost{t: t, ns: nstest.NS(t, pfx+"h"), wls: map[string]*testWorkload{}}
	for i, n := range names {
		w := &testWorkload{name: n, ns: nstest.NS(t, pfx+n),
			v4: netip.AddrFrom4([4]byte{10, 77, 0, byte(i + 1)}),
			v6: netip.MustParseAddr(fmt.Sprintf("fd77::%d", i+1))}
		w.hostIf = attach.HostIfName(w.ns.Name)
		spec := attach.Spec{HostIf: w.hostIf, NetNS: w.ns.Path(), IfName: "eth0", Addrs: []netip.Addr{w.v4, w.v6}}
		if err := h.ns.Do(func() error { _, err := attach.Add(spec); return err }); err != nil {
			t.Fatalf("attach %s: %v", n, err)
		}
		// Ping sockets, so that ICMP needs no raw socket.
		if err := w.ns.Do(func() error { return netns.Sysctl("net/ipv4/ping_group_range", "0 0") }); err != nil {
			t.Fatal(err)
		}
		h.wls[n] = w
		h.atts = append(h.atts, dataplane.Attachment{Workload: "app/" + n, Interface: w.hostIf, Addrs: []netip.Addr{w.v4, w.v6}})
	}
	waitDAD(t, h)
	return h
}

// waitDAD waits until the workloads' IPv6 addresses are usable.
func waitDAD(t *testing.T, h *testHost) {
	deadline := time.Now().Add(5 * time.Second)
	for _, w := range h.wls {
		for time.Now().Before(deadline) {
			out := nstest.Run(t, w.ns, "ip", "-6", "addr", "show", "dev", "eth0")
			if !strings.Contains(out, "tentative") {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// workloadsYAML declares the host's workloads in namespace "app", with
// label app=NAME, on host "h1".
func (h *testHost) workloadsYAML() string {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n")
	for _, w := range h.wls {
		fmt.Fprintf(&b, "---\napiVersion: bulkhead.dev/v1\nkind: Workload\nmetadata: {name: %s, namespace: app, labels: {app: %s}}\n"+
			"spec: {host: h1, ips: [%s, %q], ports: [{name: http, port: 8080, protocol: TCP}]}\n", w.name, w.name, w.v4, w.v6.String())
	}
	return b.String()
}

// compileYAML compiles the workloads and the policy documents for h1.
func (h *testHost) compileYAML(policies string) (*compile.State, *policy.Set) {
	h.t.Helper()
	set, errs := load.Bytes("test.yaml", []byte(h.workloadsYAML()+"---\n"+policies))
	if len(errs) > 0 {
		h.t.Fatalf("load: %v", errs)
	}
	c, err := compile.New(set, "h1", h.prev)
	if err != nil {
		h.t.Fatalf("compile: %v", err)
	}
	h.prev = c.State()
	return h.prev, set
}

func (h *testHost) desired(s *compile.State, set *policy.Set) dataplane.Desired {
	return dataplane.Desired{State: s, Set: set, Attachments: h.atts}
}

func (h *testHost) newDataplane(opts Options) *Dataplane {
	h.t.Helper()
	opts.NetNS = h.ns.Path()
	d, err := New(opts)
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	h.t.Cleanup(func() { d.Close() })
	return d
}

func (h *testHost) apply(d *Dataplane, policies string) *compile.State {
	h.t.Helper()
	s, set := h.compileYAML(policies)
	if err := d.Apply(context.Background(), h.desired(s, set)); err != nil {
		h.t.Fatalf("Apply: %v", err)
	}
	return s
}

// Timeouts: a connection the policy drops is given shortTimeout to prove
// it; one expected through gets longTimeout, so that a busy machine does
// not fail the test.
const (
	shortTimeout = 300 * time.Millisecond
	longTimeout  = 3 * time.Second
)

func patience(expectThrough bool) time.Duration {
	if expectThrough {
		return longTimeout
	}
	return shortTimeout
}

// listen starts a TCP (or UDP) echo server in w on port, for the test's
// lifetime.
func (w *testWorkload) listen(t *testing.T, network string, port int) {
	t.Helper()
	var closer io.Closer
	err := w.ns.Do(func() error {
		switch network {
		case "tcp":
			l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			closer = l
			go serveTCP(l)
		case "udp":
			c, err := net.ListenPacket("udp", fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			closer = c
			go serveUDP(c)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("listen %s/%d in %s: %v", network, port, w.name, err)
	}
	t.Cleanup(func() { closer.Close() })
}

func serveTCP(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

func serveUDP(c net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = c.WriteTo(buf[:n], from)
	}
}

// dial connects from w to dst:port over TCP with a short timeout; the
// socket is made in w's namespace and stays there.
func (w *testWorkload) dial(dst netip.Addr, port int) (net.Conn, error) {
	return w.dialWithin(dst, port, longTimeout)
}

func (w *testWorkload) dialWithin(dst netip.Addr, port int, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := w.ns.Do(func() error {
		var err error
		c, err = (&net.Dialer{Timeout: timeout}).Dial("tcp", netip.AddrPortFrom(dst, uint16(port)).String())
		return err
	})
	return c, err
}

// dialFrom is dial with a given source address, expecting it through or
// not.
func (w *testWorkload) dialFrom(src, dst netip.Addr, port int, through bool) (net.Conn, error) {
	var c net.Conn
	err := w.ns.Do(func() error {
		var err error
		d := &net.Dialer{Timeout: patience(through), LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		c, err = d.Dial("tcp", netip.AddrPortFrom(dst, uint16(port)).String())
		return err
	})
	return c, err
}

// tcpResult is what a connection attempt came to.
type tcpResult string

const (
	resOK      tcpResult = "ok"
	resTimeout tcpResult = "timeout"
	resRefused tcpResult = "refused"
)

func (w *testWorkload) tryTCP(t *testing.T, dst netip.Addr, port int, want tcpResult) tcpResult {
	t.Helper()
	c, err := w.dialWithin(dst, port, patience(want != resTimeout))
	return classify(t, c, err)
}

func classify(t *testing.T, c net.Conn, err error) tcpResult {
	t.Helper()
	switch {
	case err == nil:
		defer c.Close()
		if echo(c, "hello") != nil {
			return resTimeout
		}
		return resOK
	case errors.Is(err, syscall.ECONNREFUSED):
		return resRefused
	case isTimeout(err):
		return resTimeout
	}
	t.Fatalf("unexpected dial error: %v", err)
	return ""
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func echo(c net.Conn, msg string) error { return echoWithin(c, msg, longTimeout) }

func echoWithin(c net.Conn, msg string, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, got %q", msg, buf)
	}
	return nil
}

// tryUDP sends one datagram from w to dst:port and waits for the echo
// (long when it is expected, short otherwise).
func (w *testWorkload) tryUDP(t *testing.T, dst netip.Addr, port int, expect bool) bool {
	t.Helper()
	var c net.Conn
	err := w.ns.Do(func() error {
		var err error
		c, err = net.Dial("udp", netip.AddrPortFrom(dst, uint16(port)).String())
		return err
	})
	if err != nil {
		t.Fatalf("udp socket: %v", err)
	}
	defer c.Close()
	return echoWithin(c, "ping", patience(expect)) == nil
}

// ping sends one ICMP (or ICMPv6) echo request from w to dst through a
// ping socket and reports whether the reply came.
func (w *testWorkload) ping(t *testing.T, dst netip.Addr, expect bool) bool {
	t.Helper()
	network, typ := "udp4", icmp.Type(ipv4.ICMPTypeEcho)
	proto := 1
	if dst.Is6() {
		network, typ, proto = "udp6", ipv6.ICMPTypeEchoRequest, 58
	}
	var c *icmp.PacketConn
	err := w.ns.Do(func() error {
		var err error
		c, err = icmp.ListenPacket(network, "")
		return err
	})
	if err != nil {
		t.Fatalf("ping socket in %s: %v", w.name, err)
	}
	defer c.Close()
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: 1, Seq: 1, Data: []byte("bulkhead")}}
	b, _ := msg.Marshal(nil)
	if _, err := c.WriteTo(b, &net.UDPAddr{IP: dst.AsSlice()}); err != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(patience(expect)))
	buf := make([]byte, 1500)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return false
		}
		if m, err := icmp.ParseMessage(proto, buf[:n]); err == nil &&
			(m.Type == ipv4.ICMPTypeEchoReply || m.Type == ipv6.ICMPTypeEchoReply) {
			return true
		}
	}
}

// expectTCP checks a table of connection attempts.
func expectTCP(t *testing.T, cases []tcpCase) {
	t.Helper()
	var wg sync.WaitGroup
	got := make([]tcpResult, len(cases))
	for i, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = c.from.tryTCP(t, c.to, c.port, c.want)
		}()
	}
	wg.Wait()
	for i, c := range cases {
		if got[i] != c.want {
			t.Errorf("tcp %s → %s:%d = %s, want %s", c.from.name, c.to, c.port, got[i], c.want)
		}
	}
}

type tcpCase struct {
	from *testWorkload
	to   netip.Addr
	port int
	want tcpResult
}
