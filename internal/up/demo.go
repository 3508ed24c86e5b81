package up

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// demoWorkload is one workload of the demo trading floor, with the
// servers it runs (named ports) and its address's offset in the subnet.
type demoWorkload struct {
	namespace, name string
	labels          map[string]string
	ports           []api.NamedPort
	offset          int
}

var pg = api.NamedPort{Name: "postgres", Port: 5432, Protocol: "TCP"}

// floor is the demo: the workloads examples/policies speak of.
var floor = []demoWorkload{
	{"trading", "buy-signal", map[string]string{"role": "buy-signal", "side": "buy"}, nil, 11},
	{"trading", "sell-signal", map[string]string{"role": "sell-signal", "side": "sell"}, nil, 12},
	{"trading", "buy-db", map[string]string{"role": "database", "side": "buy"}, []api.NamedPort{pg}, 21},
	{"trading", "sell-db", map[string]string{"role": "database", "side": "sell"}, []api.NamedPort{pg}, 22},
	{"trading", "report", map[string]string{"role": "report"}, nil, 13},
	{"payments", "payment-processor", map[string]string{"app": "payment-processor"}, []api.NamedPort{{Name: "api", Port: 9000, Protocol: "TCP"}}, 31},
	{"payments", "cards-db", map[string]string{"app": "cards-db", "dataset": "cards"}, []api.NamedPort{pg}, 32},
	{"payments", "ledger-db", map[string]string{"app": "ledger-db", "dataset": "ledger"}, []api.NamedPort{pg}, 33},
	{"web", "frontend", map[string]string{"app": "frontend"}, []api.NamedPort{{Name: "https", Port: 443, Protocol: "TCP"}}, 41},
}

// connection is one connection a demo client tries, and what the policy
// says of it.
type connection struct {
	from, to string
	port     int
	expect   string // allow, deny or escalate
	decided  string // for escalate: what the manager answers (its decision rules, or a binding: allow, deny; "": a person decides)
	why      string
}

var connections = []connection{
	{"buy-signal", "buy-db", 5432, "allow", "", "trading/buy-db lets the buy-side signal read it"},
	{"buy-signal", "sell-db", 5432, "deny", "", "wall buy-sell"},
	{"sell-signal", "sell-db", 5432, "allow", "", "trading/sell-db lets the sell-side signal read it"},
	{"sell-signal", "buy-db", 5432, "deny", "", "wall buy-sell"},
	{"frontend", "payment-processor", 9000, "allow", "", "the front end's NetworkPolicy and payments/processor"},
	{"frontend", "cards-db", 5432, "deny", "", "the front end's NetworkPolicy allows egress to the processor only"},
	{"report", "buy-db", 5432, "escalate", "allow", "trading/reports escalates it: held in the kernel, the manager's rule reports-within-rate decides"},
	{"report", "sell-db", 5432, "escalate", "", "trading/reports-sell escalates it: the manager's rule sell-side-by-hand holds it for an operator"},
	{"payment-processor", "cards-db", 5432, "escalate", "allow", "conflict class payment-datasets: the first access binds the processor to cards, the manager decides (nobody is asked)"},
	{"payment-processor", "ledger-db", 5432, "escalate", "deny", "conflict class payment-datasets: the processor is bound to cards, so ledger is denied by the binding"},
	{"buy-signal", "payment-processor", 9000, "deny", "", "default-deny baseline"},
}

// Attempt is the outcome of one demo connection.
type Attempt struct {
	From, To string // namespace/name
	Port     int
	Expect   string // what the policy says: allow, deny or escalate
	Decided  string // for escalate: what the decision rules answer ("": a person decides)
	Outcome  string // connected, refused or dropped
	Why      string
	Kernel   string // the NFLOG record the kernel wrote about it ("" none)
	Manager  string // for escalate: how the manager decided it ("" not known)
	Time     time.Time
}

// AsExpected reports whether the kernel did what the policy (and, for an
// escalated connection, the decision rules) says.
func (a Attempt) AsExpected() bool {
	if a.Expect == "escalate" {
		return a.Decided == "" || (a.Outcome == "connected") == (a.Decided == "allow")
	}
	return (a.Outcome == "connected") == (a.Expect == "allow")
}

// demoFloor is the running demo.
type demoFloor struct {
	u       *Up
	out     io.Writer
	outMu   *sync.Mutex
	wls     map[string]*runningWorkload
	logs    *logTable
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closers []func()
	owned   *owned // what this instance created, on disk

	mu     sync.Mutex
	recent map[string]Attempt // by from → to:port
}

type runningWorkload struct {
	demoWorkload
	ns    *netns.NS
	addr  netip.Addr
	iface string
}

func (w *runningWorkload) key() string { return w.namespace + "/" + w.name }

// inHost runs fn in the host namespace.
func (u *Up) inHost(fn func() error) error {
	if u.opts.NetNS == "" {
		return fn()
	}
	return netns.DoPath(u.opts.NetNS, fn)
}

// startDemo attaches the floor, registers it with the agent (each
// workload's policy is in force before its first packet), and starts the
// servers, the NFLOG reader and the clients.
func startDemo(ctx context.Context, u *Up) (d *demoFloor, err error) {
	d = &demoFloor{u: u, out: u.opts.Out, outMu: &sync.Mutex{}, wls: map[string]*runningWorkload{}, recent: map[string]Attempt{},
		owned: newOwned(u.opts.DataDir)}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	d.removeLeftovers()
	for _, dw := range floor {
		w, err := d.attach(ctx, dw)
		if err != nil {
			return nil, err
		}
		d.wls[dw.name] = w
	}
	d.logs = u.logs
	if d.logs == nil {
		d.printf("(no kernel log records: the flow collector did not start; showing what the clients see)\n")
	}
	return d, nil
}

// startClients starts one client per source workload; once.
func (d *demoFloor) startClients() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	bySource := map[string][]connection{}
	for _, c := range connections {
		bySource[c.from] = append(bySource[c.from], c)
	}
	for from, cs := range bySource {
		d.wg.Add(1)
		go func() { defer d.wg.Done(); d.client(ctx, d.wls[from], cs) }()
	}
	d.wg.Add(1)
	go func() { defer d.wg.Done(); d.scanOnce(ctx) }()
}

// removeLeftovers removes what this instance's demo left behind when it
// was not stopped: what it recorded as its own, and nothing else.
func (d *demoFloor) removeLeftovers() {
	kept, err := d.owned.removeRecorded(d.u.inHost)
	if err != nil {
		d.printf("(leftovers of an earlier demo: %v)\n", err)
	}
	for _, k := range kept {
		d.printf("(left %s alone: it is not the one an earlier demo of this instance made)\n", k)
	}
}

// attach makes a workload's namespace, its veth and its servers, and
// registers it with the agent.
func (d *demoFloor) attach(ctx context.Context, dw demoWorkload) (*runningWorkload, error) {
	u := d.u
	name := u.opts.DemoPrefix + dw.name
	ns, err := d.owned.createNS(name)
	if err != nil {
		return nil, err
	}
	w := &runningWorkload{demoWorkload: dw, ns: ns, iface: attach.HostIfName(name)}
	d.closers = append(d.closers, func() { _ = ns.Delete() })
	base := u.opts.DemoSubnet.Masked().Addr().As4()
	base[3] += byte(dw.offset)
	w.addr = netip.AddrFrom4(base)
	if !u.opts.DemoSubnet.Contains(w.addr) {
		return nil, fmt.Errorf("up: demo subnet %s is too small: it must hold .%d", u.opts.DemoSubnet, dw.offset)
	}
	if err := ns.Do(linkUp("lo")); err != nil {
		return nil, fmt.Errorf("up: demo: %s: loopback: %w", name, err)
	}
	err = u.inHost(func() error {
		if _, err := attach.Add(attach.Spec{HostIf: w.iface, NetNS: ns.Path(), IfName: "eth0", Addrs: []netip.Addr{w.addr}}); err != nil {
			return err
		}
		return d.owned.recordIface(w.iface)
	})
	if err != nil {
		return nil, fmt.Errorf("up: demo: attach %s: %w", name, err)
	}
	d.closers = append(d.closers, func() { _ = u.inHost(func() error { return attach.Del(w.iface) }) })
	for _, p := range dw.ports {
		if err := d.serve(w, p.Port); err != nil {
			return nil, err
		}
	}
	reg := api.WorkloadRegistration{Namespace: dw.namespace, Name: dw.name, Labels: dw.labels, IPs: []string{w.addr.String()},
		Ports: dw.ports, Interface: w.iface, ContainerID: name}
	if _, err := u.a.RegisterWorkload(ctx, reg); err != nil {
		return nil, fmt.Errorf("up: demo: register %s: %w", w.key(), err)
	}
	d.closers = append(d.closers, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = u.a.UnregisterWorkload(ctx, dw.namespace, dw.name)
	})
	return w, nil
}

// linkUp sets an interface of the calling thread's namespace up.
func linkUp(name string) func() error {
	return func() error {
		l, err := netlink.LinkByName(name)
		if err == nil {
			err = netlink.LinkSetUp(l)
		}
		return err
	}
}

// serve answers TCP connections on port with the workload's name; the
// socket is created inside the workload's namespace.
func (d *demoFloor) serve(w *runningWorkload, port int) error {
	var ln net.Listener
	err := w.ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(w.addr, uint16(port)).String())
		return err
	})
	if err != nil {
		return fmt.Errorf("up: demo: %s: listen on %d: %w", w.key(), port, err)
	}
	done := make(chan struct{})
	d.closers = append(d.closers, func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(time.Second))
			fmt.Fprintf(c, "%s\n", w.key())
			c.Close()
		}
	}()
	return nil
}

// client tries the workload's connections every DemoEvery.
func (d *demoFloor) client(ctx context.Context, from *runningWorkload, cs []connection) {
	t := time.NewTicker(d.u.opts.DemoEvery)
	defer t.Stop()
	for {
		for _, c := range cs {
			if ctx.Err() != nil {
				return
			}
			a := d.try(ctx, from, d.wls[c.to], c)
			if ctx.Err() != nil {
				return // stopping: the attempt may have been cut short
			}
			d.report(a)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// dialTimeout bounds a demo connection; an escalated one waits longer,
// as a client does while a person decides (the demo's hold is 30 s).
const (
	dialTimeout         = time.Second
	escalateDialTimeout = 35 * time.Second
)

// try makes one connection from inside the source's namespace.
func (d *demoFloor) try(ctx context.Context, from, to *runningWorkload, c connection) Attempt {
	a := Attempt{From: from.key(), To: to.key(), Port: c.port, Expect: c.expect, Decided: c.decided, Why: c.why, Time: time.Now()}
	timeout := dialTimeout
	dialCtx := ctx
	if c.expect == "escalate" {
		timeout = escalateDialTimeout
		stop := d.noticeHeld(ctx, from, to, c.port)
		defer stop()
		// A denied escalation drops the SYN: the client would wait out its
		// timeout. The demo stops waiting once the manager has denied it.
		var cancel context.CancelFunc
		dialCtx, cancel = context.WithCancel(ctx)
		defer cancel()
		go d.cancelWhenDenied(dialCtx, cancel, from, to, c.port, a.Time)
	}
	err := from.ns.Do(func() error {
		dl := net.Dialer{Timeout: timeout}
		conn, err := dl.DialContext(dialCtx, "tcp", netip.AddrPortFrom(to.addr, uint16(c.port)).String())
		if err == nil {
			conn.Close()
		}
		return err
	})
	var ne net.Error
	switch {
	case err == nil:
		a.Outcome = "connected"
	case errors.As(err, &ne) && ne.Timeout(), ctx.Err() == nil && errors.Is(err, context.Canceled):
		a.Outcome = "dropped"
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EACCES):
		a.Outcome = "refused"
	default:
		a.Outcome = "failed: " + err.Error()
	}
	if a.Outcome != "connected" && d.logs != nil && c.expect != "escalate" {
		a.Kernel = d.logs.find(ctx, from.addr, to.addr, c.port, a.Time)
	}
	if c.expect == "escalate" {
		a.Manager = d.decision(ctx, from, to, c.port, a.Time)
	}
	return a
}

func (d *demoFloor) report(a Attempt) {
	d.mu.Lock()
	d.recent[a.From+" → "+a.To+":"+fmt.Sprint(a.Port)] = a
	d.mu.Unlock()
	verdict := map[string]string{"connected": "allowed", "refused": "denied", "dropped": "denied"}[a.Outcome]
	if verdict == "" {
		verdict = a.Outcome
	}
	line := fmt.Sprintf("%s  %-8s %-27s → %-30s %s", a.Time.Format("15:04:05"), verdict, a.From, fmt.Sprintf("%s:%d", a.To, a.Port), a.Why)
	if a.Kernel != "" {
		line += "  [kernel: " + a.Kernel + "]"
	}
	if a.Manager != "" {
		line += "  [manager: " + a.Manager + "]"
	}
	if !a.AsExpected() {
		line += "  UNEXPECTED: the policy says " + a.Expect
	}
	d.printf("%s\n", line)
}

func (d *demoFloor) printf(format string, args ...any) {
	d.outMu.Lock()
	defer d.outMu.Unlock()
	fmt.Fprintf(d.out, format, args...)
}

func (d *demoFloor) latest() []Attempt {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]Attempt, 0, len(d.recent))
	for _, a := range d.recent {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].From+out[i].To < out[j].From+out[j].To })
	return out
}

func (d *demoFloor) describe() string {
	var b strings.Builder
	names := make([]string, 0, len(d.wls))
	for n := range d.wls {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		w := d.wls[n]
		fmt.Fprintf(&b, "    %-28s %-14s namespace %s%s\n", w.key(), w.addr, d.u.opts.DemoPrefix, w.name)
	}
	return b.String()
}

// close stops the clients, removes the demo's namespaces and
// interfaces and unregisters its workloads.
func (d *demoFloor) close() error {
	d.mu.Lock()
	if d.cancel != nil {
		d.cancel()
	}
	d.cancel = func() {}
	d.mu.Unlock()
	d.wg.Wait()
	if d.logs != nil {
	}
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
	return d.owned.clear()
}
