package dptest

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/load"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// HostName is the host every workload of a World runs on.
const HostName = "h1"

// RetryTimeout is the longer timeout of the one retry an expectation gets
// when a connection that should have passed timed out (a busy machine is
// not a dataplane bug).
const RetryTimeout = 2 * time.Second

// World is one case: a host, its workloads and the policy in force. Its
// methods fail the test on a harness error.
type World struct {
	T    *testing.T
	Host Host

	ctx  context.Context
	wls  []*policy.Workload
	atts []dataplane.Attachment
	prev *compile.State
	eng  *policy.Engine
}

// WL is a workload (or an outside host) of a World.
type WL struct {
	Name  string
	Addrs []netip.Addr
}

// V4 returns the workload's first IPv4 address.
func (w *WL) V4() netip.Addr { return w.addr(true) }

// V6 returns the workload's first IPv6 address.
func (w *WL) V6() netip.Addr { return w.addr(false) }

func (w *WL) addr(v4 bool) netip.Addr {
	for _, a := range w.Addrs {
		if a.Is4() == v4 {
			return a
		}
	}
	panic(fmt.Sprintf("dptest: %s has no IPv%v address", w.Name, map[bool]int{true: 4, false: 6}[v4]))
}

// NewWorld makes a fresh host of h.
func NewWorld(t *testing.T, h Harness) *World {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &World{T: t, Host: h.NewHost(t), ctx: ctx}
}

// Add attaches a workload: name is namespace/name, labels "k=v,k2=v2",
// addrs space-separated, ports "name/protocol/port" space-separated.
func (w *World) Add(name, labels, addrs, ports string) *WL {
	w.T.Helper()
	ns, n, ok := strings.Cut(name, "/")
	if !ok {
		w.T.Fatalf("dptest: workload %q: want namespace/name", name)
	}
	wl := &WL{Name: name, Addrs: parseAddrs(w.T, addrs)}
	iface, err := w.Host.Attach(w.ctx, Endpoint{Name: name, Addrs: wl.Addrs})
	if err != nil {
		w.T.Fatal(err)
	}
	pw := &policy.Workload{Namespace: ns, Name: n, Labels: parseLabels(w.T, labels), IPs: wl.Addrs, Host: HostName}
	for _, f := range strings.Fields(ports) {
		parts := strings.Split(f, "/")
		proto, ok := policy.ParseProtocol(parts[len(parts)-2])
		port, err := strconv.Atoi(parts[len(parts)-1])
		if len(parts) != 3 || !ok || err != nil {
			w.T.Fatalf("dptest: port %q: want name/protocol/number", f)
		}
		pw.Ports = append(pw.Ports, policy.NamedPort{Name: parts[0], Protocol: proto, Port: port})
	}
	w.wls = append(w.wls, pw)
	w.atts = append(w.atts, dataplane.Attachment{Workload: name, Interface: iface, Addrs: wl.Addrs})
	return wl
}

// Outside creates a host outside the inventory, routed through the host;
// it skips the test when the harness cannot.
func (w *World) Outside(name, addrs string) *WL {
	w.T.Helper()
	wl := &WL{Name: name, Addrs: parseAddrs(w.T, addrs)}
	if err := w.Host.AddOutside(w.ctx, Endpoint{Name: name, Addrs: wl.Addrs}); err != nil {
		if err == ErrUnsupported {
			w.T.Skipf("the harness has no outside hosts")
		}
		w.T.Fatal(err)
	}
	return wl
}

func parseAddrs(t *testing.T, s string) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for _, f := range strings.Fields(s) {
		a, err := netip.ParseAddr(f)
		if err != nil {
			t.Fatalf("dptest: address %q: %v", f, err)
		}
		out = append(out, a)
	}
	return out
}

func parseLabels(t *testing.T, s string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("dptest: label %q: want key=value", kv)
		}
		m[k] = v
	}
	return m
}

// Apply loads the policy documents (YAML, as users write them), adds the
// workloads, compiles the host's state and applies it.
func (w *World) Apply(docs string) {
	w.T.Helper()
	if err := w.TryApply(docs); err != nil {
		w.T.Fatal(err)
	}
}

// TryApply is Apply returning the error.
func (w *World) TryApply(docs string) error {
	set, errs := load.Bytes("case.yaml", []byte(docs))
	if err := errs.Err(); err != nil {
		return fmt.Errorf("dptest: policy of the case: %w", err)
	}
	set.Workloads = append(set.Workloads, w.wls...)
	eng, err := policy.NewEngine(set)
	if err != nil {
		return fmt.Errorf("dptest: policy of the case: %w", err)
	}
	c, err := compile.New(set, HostName, w.prev)
	if err != nil {
		return fmt.Errorf("dptest: compile: %w", err)
	}
	st := c.State()
	ctx, cancel := context.WithTimeout(w.ctx, 20*time.Second)
	defer cancel()
	d := dataplane.Desired{State: st, Set: set, Attachments: append([]dataplane.Attachment(nil), w.atts...)}
	if err := w.Host.Dataplane().Apply(ctx, d); err != nil {
		return fmt.Errorf("dptest: apply: %w", err)
	}
	w.eng, w.prev = eng, st
	return nil
}

// Service is "tcp/80", "udp/53", "sctp/9", "icmp" or "icmpv6".
func parseService(t *testing.T, svc string) (policy.Protocol, int) {
	t.Helper()
	name, port, _ := strings.Cut(svc, "/")
	p, ok := policy.ParseProtocol(name)
	if !ok {
		t.Fatalf("dptest: service %q: want protocol/port or icmp", svc)
	}
	if !p.HasPorts() {
		return p, 0
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("dptest: service %q: want protocol/port", svc)
	}
	return p, n
}

// Verdict is the reference evaluator's verdict on a new connection from
// from to the address to.
func (w *World) Verdict(from *WL, to netip.Addr, svc string) policy.Verdict {
	w.T.Helper()
	proto, port := parseService(w.T, svc)
	src, err := sameFamily(from.Addrs, to)
	if err != nil {
		w.T.Fatal(err)
	}
	return w.verdict(src, to, proto, port)
}

func (w *World) verdict(src, to netip.Addr, proto policy.Protocol, port int) policy.Verdict {
	switch proto {
	case policy.ICMP:
		port = 8 << 8
	case policy.ICMPv6:
		port = 128 << 8
	}
	if w.eng == nil {
		return policy.Verdict{Action: policy.Allow}
	}
	p := policy.Packet{Src: src, Dst: to, Protocol: proto, DstPort: port}
	a, v := policy.NewConntrack(w.eng).Packet(p)
	v.Action = a
	return *v
}

// Expect tries a new connection and checks its outcome, after checking
// that the reference evaluator agrees with the case.
func (w *World) Expect(from *WL, to netip.Addr, svc string, want Outcome) {
	w.T.Helper()
	if oracle := OutcomeOf(dataplane.Enforced(w.Verdict(from, to, svc))); oracle != want {
		w.T.Errorf("case bug: %s -> %v %s: the case wants %s, the reference evaluator says %s", from.Name, to, svc, want, oracle)
	}
	w.expect(from, to, svc, want)
}

func (w *World) expect(from *WL, to netip.Addr, svc string, want Outcome) {
	w.T.Helper()
	proto, port := parseService(w.T, svc)
	tr := Try{From: from.Name, To: to, Protocol: proto, Port: port}
	got, detail := w.try(tr, want)
	if got != want {
		w.T.Errorf("%s -> %v %s: %s (%s), want %s", from.Name, to, svc, got, detail, want)
	}
}

// try makes the attempt, with one longer retry when a connection that
// should not have been dropped timed out.
func (w *World) try(tr Try, want Outcome) (Outcome, string) {
	w.T.Helper()
	got, detail, err := w.Host.Try(w.ctx, tr)
	if err != nil {
		w.T.Fatal(err)
	}
	if got == Dropped && want != Dropped && !tr.Spoof.IsValid() {
		tr.Timeout = RetryTimeout
		again, d2, err := w.Host.Try(w.ctx, tr)
		if err != nil {
			w.T.Fatal(err)
		}
		if again != Dropped {
			w.T.Logf("%s -> %v %v/%d: dropped once, then %s (%s): a slow machine or a flaky dataplane", tr.From, tr.To, tr.Protocol, tr.Port, again, d2)
			return again, d2
		}
	}
	return got, detail
}

// Spoof sends a datagram from from's interface with source address as to
// to's UDP port and checks whether it was delivered.
func (w *World) Spoof(from *WL, as, to netip.Addr, port int, want Outcome) {
	w.T.Helper()
	tr := Try{From: from.Name, To: to, Protocol: policy.UDP, Port: port, Spoof: as}
	got, detail, err := w.Host.Try(w.ctx, tr)
	if err != nil {
		w.T.Fatal(err)
	}
	if got == Dropped && want == Connected {
		// One longer retry, as try gives: a datagram that must pass may
		// be late on a loaded machine. Only one that must be dropped is
		// counted as spoofed, so the retry leaves the counters alone.
		tr.Timeout = RetryTimeout
		if got, detail, err = w.Host.Try(w.ctx, tr); err != nil {
			w.T.Fatal(err)
		}
		if got != Dropped {
			w.T.Logf("%s sending as %v -> %v udp/%d: dropped once, then %s: a slow machine or a flaky dataplane", from.Name, as, to, port, got)
		}
	}
	if got != want {
		w.T.Errorf("%s spoofing %v -> %v udp/%d: %s (%s), want %s", from.Name, as, to, port, got, detail, want)
	}
}

// Open opens a connection that must succeed. It waits up to
// RetryTimeout for it (a connection that succeeds answers at once): the
// drop timeout is for connections that must not, and a loaded machine can
// exceed it on the way to one that must.
func (w *World) Open(from *WL, to netip.Addr, svc string) Conn {
	w.T.Helper()
	proto, port := parseService(w.T, svc)
	c, err := w.Host.Open(w.ctx, Try{From: from.Name, To: to, Protocol: proto, Port: port, Timeout: RetryTimeout})
	if err != nil {
		w.T.Fatal(err)
	}
	w.T.Cleanup(func() { c.Close() })
	return c
}

// Counters reads the dataplane's counters.
func (w *World) Counters() dataplane.Counters {
	w.T.Helper()
	c, err := w.Host.Dataplane().Counters(w.ctx)
	if err != nil {
		w.T.Fatal(err)
	}
	return c
}

// RequireProtocol checks that the host can carry p. A protocol this
// project's machines cannot carry (SCTP) is an exception of nstest's one
// list: skipped and reported. Any other is a missing prerequisite: a
// failure in CI.
func (w *World) RequireProtocol(p policy.Protocol) {
	w.T.Helper()
	nstest.RequireKernel(w.T, strings.ToLower(p.String()), w.Host.Supports(p))
}
