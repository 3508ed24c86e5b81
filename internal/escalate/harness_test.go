package escalate

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// prefix names every namespace, interface and table these tests create.
const prefix = "bhes"

// testTable is the table the kernel tests write in their host namespace.
const testTable = "bhes_test"

func TestMain(m *testing.M) {
	removeStale(10 * time.Minute)
	os.Exit(m.Run())
}

// removeStale removes namespaces of this package's earlier runs that died
// before their cleanup; only old ones, another run may be going on.
func removeStale(age time.Duration) {
	entries, err := os.ReadDir(netns.Dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !strings.HasPrefix(e.Name(), prefix) || time.Since(info.ModTime()) < age {
			continue
		}
		_ = (&netns.NS{Name: e.Name()}).Delete()
	}
}

// kHost is a throwaway host namespace with workloads attached by routed
// veths; traffic between them crosses its forward hook.
type kHost struct {
	t   *testing.T
	ns  *netns.NS
	wls map[string]*kWorkload
}

type kWorkload struct {
	name   string
	ns     *netns.NS
	v4, v6 netip.Addr
	hostIf string
}

// newKHost attaches one workload per name: the i-th gets 10.78.0.i+1 and
// fd78::i+1.
func newKHost(t *testing.T, names ...string) *kHost {
	t.Helper()
	nstest.RequireRoot(t)
	h := &kHost{t: t, ns: nstest.NS(t, prefix+"h"), wls: map[string]*kWorkload{}}
	for i, n := range names {
		w := &kWorkload{name: n, ns: nstest.NS(t, prefix+n),
			v4: netip.AddrFrom4([4]byte{10, 78, 0, byte(i + 1)}),
			v6: netip.MustParseAddr(fmt.Sprintf("fd78::%d", i+1))}
		w.hostIf = prefix + w.ns.Name[len(w.ns.Name)-8:] // bhes + the namespace's random hex
		spec := attach.Spec{HostIf: w.hostIf, NetNS: w.ns.Path(), IfName: "eth0", Addrs: []netip.Addr{w.v4, w.v6}}
		if err := h.ns.Do(func() error { _, err := attach.Add(spec); return err }); err != nil {
			t.Fatalf("attach %s: %v", n, err)
		}
		if err := w.ns.Do(func() error { return netns.Sysctl("net/ipv4/ping_group_range", "0 0") }); err != nil {
			t.Fatal(err)
		}
		h.wls[n] = w
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, w := range h.wls { // wait for IPv6 duplicate address detection
		for time.Now().Before(deadline) && strings.Contains(nstest.Run(t, w.ns, "ip", "-6", "addr", "show", "dev", "eth0"), "tentative") {
			time.Sleep(50 * time.Millisecond)
		}
	}
	return h
}

// queueRules writes the test table: in the host's forward chain, the first
// packet (ct state new) of TCP and UDP to port, and ICMP and ICMPv6 echo
// requests, go to NFQUEUE num without bypass. Everything else is accepted.
func (h *kHost) queueRules(num uint16, port uint16) {
	h.t.Helper()
	err := h.ns.Do(func() error {
		c, err := nftables.New()
		if err != nil {
			return err
		}
		tab := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: testTable})
		accept := nftables.ChainPolicyAccept
		ch := c.AddChain(&nftables.Chain{Name: "forward", Table: tab, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
		dport := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)}}
		icmpType := func(typ byte) []expr.Any {
			return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{typ}}}
		}
		for _, m := range [][]expr.Any{
			cat(l4(unix.IPPROTO_TCP), dport), cat(l4(unix.IPPROTO_UDP), dport),
			cat(l4(unix.IPPROTO_ICMP), icmpType(8)), cat(l4(unix.IPPROTO_ICMPV6), icmpType(128)),
		} {
			c.AddRule(&nftables.Rule{Table: tab, Chain: ch, Exprs: cat(ctNew(), m, []expr.Any{nfqueueTarget(num)})})
		}
		return c.Flush()
	})
	if err != nil {
		h.t.Fatalf("write table %s: %v", testTable, err)
	}
	h.t.Cleanup(func() {
		_ = h.ns.Do(func() error {
			c, err := nftables.New()
			if err != nil {
				return err
			}
			c.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: testTable})
			return c.Flush()
		})
	})
}

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func ctNew() []expr.Any {
	return []expr.Any{&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)}}
}

func l4(proto byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}}}
}

// nfqueueTarget is the xtables NFQUEUE target (revision 3) without the
// bypass flag, as the dataplane writes it on a kernel without nft queue.
func nfqueueTarget(num uint16) expr.Any {
	info := make([]byte, 8) // struct xt_NFQ_info_v3: queuenum, queues_total, flags, pad
	binary.NativeEndian.PutUint16(info[0:], num)
	binary.NativeEndian.PutUint16(info[2:], 1)
	u := xt.Unknown(info)
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &u}
}

// open starts a Holder on the host's queue num, closed when the test ends.
func (h *kHost) open(opts Options) *Holder {
	h.t.Helper()
	opts.NetNS = h.ns.Path()
	hd, err := Open(opts)
	if err != nil {
		h.t.Fatalf("open holder: %v", err)
	}
	h.t.Cleanup(func() { hd.Close() })
	return hd
}

// resolverFor resolves the host's workloads, identity i+1 for the i-th.
func (h *kHost) resolverFor() *FakeResolver {
	r := &FakeResolver{Endpoints: map[netip.Addr]Endpoint{}, Rule: "test/hold"}
	id := uint32(100)
	for _, w := range h.wls {
		id++
		e := Endpoint{Namespace: "app", Name: w.name, Identity: id, Labels: map[string]string{"app": w.name}}
		r.Endpoints[w.v4], r.Endpoints[w.v6] = e, e
	}
	return r
}

// listen starts a TCP and a UDP echo server in w on port.
func (w *kWorkload) listen(t *testing.T, port int) {
	t.Helper()
	err := w.ns.Do(func() error {
		l, err := net.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			return err
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
			}
		}()
		u, err := net.ListenPacket("udp", fmt.Sprintf(":%d", port))
		if err != nil {
			return err
		}
		t.Cleanup(func() { u.Close() })
		go func() {
			buf := make([]byte, 1500)
			for {
				n, from, err := u.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = u.WriteTo(buf[:n], from)
			}
		}()
		return nil
	})
	if err != nil {
		t.Fatalf("listen on %d in %s: %v", port, w.name, err)
	}
}

// dial connects from w over TCP; the socket stays in w's namespace.
func (w *kWorkload) dial(dst netip.Addr, port int, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := w.ns.Do(func() error {
		var err error
		c, err = (&net.Dialer{Timeout: timeout}).Dial("tcp", netip.AddrPortFrom(dst, uint16(port)).String())
		return err
	})
	return c, err
}

// udp sends one datagram from w and waits for its echo.
func (w *kWorkload) udp(dst netip.Addr, port int, timeout time.Duration) error {
	var c net.Conn
	if err := w.ns.Do(func() error {
		var err error
		c, err = net.Dial("udp", netip.AddrPortFrom(dst, uint16(port)).String())
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	return echo(c, "datagram", timeout)
}

func echo(c net.Conn, msg string, timeout time.Duration) error {
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
