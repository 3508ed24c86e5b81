package flows_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/flows"
	"github.com/bulkhead-dev/bulkhead/internal/flows/flowstest"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// The test host: namespaces a and b, each routed through h by a veth,
// and in h a small nft table of the test's own that, like the dataplane,
// accepts established traffic, allows b:8080, and counts, logs (rate
// limited, with the dataplane's prefixes) and drops b:9090/tcp and
// b:9091/udp.
type host struct {
	h, a, b *netns.NS
}

var (
	addrA = netip.MustParseAddr("10.231.1.2")
	addrB = netip.MustParseAddr("10.231.2.2")
)

const (
	logGroup = 7
	ruleTCP  = "Policy/bhfl/deny-tcp/ingress/0"
	ruleUDP  = "Policy/bhfl/deny-udp/ingress/0"
	logRate  = 10
)

func newHost(t *testing.T) *host {
	t.Helper()
	nstest.RequireRoot(t)
	nstest.RequireCommand(t, "nft")
	hs := &host{h: nstest.NS(t, "bhfl"), a: nstest.NS(t, "bhfl"), b: nstest.NS(t, "bhfl")}
	for i, w := range []*netns.NS{hs.a, hs.b} {
		v := nstest.Name("bhfl")
		sub := i + 1
		ip(t, "-n", hs.h.Name, "link", "add", v, "type", "veth", "peer", "name", "eth0", "netns", w.Name)
		ip(t, "-n", hs.h.Name, "addr", "add", fmt.Sprintf("10.231.%d.1/30", sub), "dev", v)
		ip(t, "-n", hs.h.Name, "link", "set", v, "up")
		ip(t, "-n", w.Name, "addr", "add", fmt.Sprintf("10.231.%d.2/30", sub), "dev", "eth0")
		ip(t, "-n", w.Name, "link", "set", "eth0", "up")
		ip(t, "-n", w.Name, "route", "add", "default", "via", fmt.Sprintf("10.231.%d.1", sub))
	}
	nstest.Run(t, hs.h, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	// Conntrack keeps a closed TCP connection 120 s; its DESTROY event
	// would come that late.
	nstest.Run(t, hs.h, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1")
	table := fmt.Sprintf(`table inet bhfl {
	counter bhfl_tcp { }
	counter bhfl_udp { }
	chain bhfl_fwd {
		type filter hook forward priority 0; policy accept;
		ct state established,related accept
		ip daddr %[1]s tcp dport 8080 accept
		ip daddr %[1]s tcp dport 9090 counter name "bhfl_tcp"
		ip daddr %[1]s tcp dport 9090 limit rate %[4]d/second burst %[4]d packets log group %[5]d prefix "bh deny %[2]s"
		ip daddr %[1]s tcp dport 9090 drop
		ip daddr %[1]s udp dport 9091 counter name "bhfl_udp"
		ip daddr %[1]s udp dport 9091 limit rate %[4]d/second burst %[4]d packets log group %[5]d prefix "bh deny %[3]s"
		ip daddr %[1]s udp dport 9091 drop
	}
}`, addrB, ruleTCP, ruleUDP, logRate, logGroup)
	cmd := exec.Command("ip", "netns", "exec", hs.h.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(table)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft table in %s: %v: %s", hs.h.Name, err, out)
	}
	return hs
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

// counters reads the test table's counters as the dataplane's Counters.
type counters struct{ h *netns.NS }

var packetsRE = regexp.MustCompile(`packets (\d+)`)

func (c counters) Counters(ctx context.Context) (dataplane.Counters, error) {
	out := dataplane.Counters{Rules: map[string]dataplane.Counter{}}
	for name, rule := range map[string]string{"bhfl_tcp": ruleTCP, "bhfl_udp": ruleUDP} {
		b, err := exec.CommandContext(ctx, "ip", "netns", "exec", c.h.Name, "nft", "list", "counter", "inet", "bhfl", name).CombinedOutput()
		if err != nil {
			return out, fmt.Errorf("list counter %s: %v: %s", name, err, b)
		}
		m := packetsRE.FindSubmatch(b)
		if m == nil {
			return out, fmt.Errorf("counter %s: no packets in %q", name, b)
		}
		n, _ := strconv.ParseUint(string(m[1]), 10, 64)
		out.Rules[rule] = dataplane.Counter{Packets: n}
	}
	return out, nil
}

// serve listens on b:8080; every connection reads until the client
// closes its side, then writes reply bytes and closes.
func (hs *host) serve(t *testing.T, reply int) {
	t.Helper()
	var ln net.Listener
	if err := hs.b.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(addrB, 8080).String())
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
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.Copy(io.Discard, c)
				c.Write(make([]byte, reply))
			}()
		}
	}()
}

// dial connects from a to b:port (timeout bounds it).
func (hs *host) dial(port int, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := hs.a.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", netip.AddrPortFrom(addrB, uint16(port)).String(), timeout)
		return err
	})
	return c, err
}

// exchange makes one allowed connection: send bytes out, read the reply.
func (hs *host) exchange(t *testing.T, send int) {
	t.Helper()
	c, err := hs.dial(8080, 2*time.Second)
	if err != nil {
		t.Fatalf("allowed connection: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(make([]byte, send)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatal(err)
	}
}

func collect(t *testing.T, hs *host, sink flows.Sink, dir string, spool int64) *flows.Collector {
	t.Helper()
	c, err := flows.New(flows.Config{NetNS: hs.h.Path(), LogGroup: logGroup, StateDir: dir, Sink: sink,
		Counters: counters{hs.h}, FlushInterval: 200 * time.Millisecond, CounterInterval: 200 * time.Millisecond, SpoolBytes: spool, Host: "bhfl-test",
		Logger: slog.New(slog.NewTextHandler(tWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sweep lists h's conntrack table, which makes the kernel remove the
// entries that have expired (and send their DESTROY events) now, rather
// than when its garbage collector comes by, which can take a minute.
func (hs *host) sweep(t *testing.T) {
	f, err := os.Open(hs.h.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := conntrack.Dial(&netlink.Config{NetNS: int(f.Fd())})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Dump(nil); err != nil {
		t.Fatal(err)
	}
}

// tWriter logs to the test.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitFor polls cond every 100 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("after %v: %s", d, what)
}

func toB(recs []flows.Record, port uint16) []flows.Record {
	var out []flows.Record
	for _, r := range recs {
		if r.Src.Addr == addrA && r.Dst.Addr == addrB && r.Dst.Port == port {
			out = append(out, r)
		}
	}
	return out
}

// One allowed TCP connection is one record: both directions' packets and
// bytes as sent, its start and end, the workloads the Resolver names.
func TestAllowedConnectionIsOneFlow(t *testing.T) {
	hs := newHost(t)
	hs.serve(t, 1000)
	sink := &flowstest.Sink{}
	res := &flowstest.Resolver{
		Endpoints: map[netip.Addr]flows.Endpoint{
			addrA: {Workload: "web", Namespace: "app", Identity: 2},
			addrB: {Workload: "db", Namespace: "app", Identity: 3}},
		Rules: map[netip.AddrPort]string{netip.AddrPortFrom(addrB, 8080): "Policy/app/db-in/ingress/web"}}
	c, err := flows.New(flows.Config{NetNS: hs.h.Path(), LogGroup: logGroup, StateDir: t.TempDir(), Sink: sink,
		Resolver: res, FlushInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := time.Now()
	hs.exchange(t, 5000)
	closed := time.Now()
	waitFor(t, 60*time.Second, "no record of the connection", func() bool {
		hs.sweep(t)
		return len(toB(sink.Received().Records, 8080)) > 0
	})
	recs := toB(sink.Received().Records, 8080)
	if len(recs) != 1 {
		t.Fatalf("%d records of one connection: %+v", len(recs), recs)
	}
	r := recs[0]
	t.Logf("record: %+v", r)
	if r.Verdict != flows.Allow || r.Source != flows.FromConntrack || r.Proto != 6 ||
		r.Rule != "Policy/app/db-in/ingress/web" || r.Src.Workload != "web" || r.Dst.Workload != "db" || r.Dst.Identity != 3 {
		t.Fatalf("record %+v", r)
	}
	// IP bytes: SYN and SYN-ACK 60 (options), every other segment 52
	// (timestamps), plus the payload.
	if got := payload(r.Orig); got != 5000 {
		t.Errorf("orig: %+v carries %d bytes of payload, want 5000", r.Orig, got)
	}
	if got := payload(r.Reply); got != 1000 {
		t.Errorf("reply: %+v carries %d bytes of payload, want 1000", r.Reply, got)
	}
	if r.Start.Before(before.Add(-time.Second)) || r.Start.After(closed) || r.End.Before(r.Start) || r.End.After(closed.Add(2*time.Second)) {
		t.Errorf("start %v end %v; the connection ran from %v to %v", r.Start, r.End, before, closed)
	}
}

func payload(c flows.Count) int64 {
	if c.Packets == 0 {
		return -1
	}
	return int64(c.Bytes) - 60 - int64(c.Packets-1)*52
}

// A connection the table denies leaves no conntrack entry: it is a record
// from NFLOG with the rule of the log prefix, one per 5-tuple, counting
// the SYNs the kernel dropped.
func TestDeniedConnectionHasItsRule(t *testing.T) {
	hs := newHost(t)
	sink := &flowstest.Sink{}
	c := collect(t, hs, sink, t.TempDir(), 0)
	defer c.Close()
	if _, err := hs.dial(9090, 300*time.Millisecond); err == nil {
		t.Fatal("a denied connection was made")
	}
	waitFor(t, 10*time.Second, "no record of the denied connection", func() bool {
		return len(toB(sink.Received().Records, 9090)) > 0
	})
	recs := toB(sink.Received().Records, 9090)
	if len(recs) != 1 {
		t.Fatalf("%d records of one denied connection: %+v", len(recs), recs)
	}
	r := recs[0]
	t.Logf("record: %+v", r)
	if r.Verdict != flows.Deny || r.Rule != ruleTCP || r.Source != flows.FromNFLOG || r.Proto != 6 ||
		r.Orig.Packets < 1 || r.Orig.Bytes != 60*r.Orig.Packets || r.Reply != (flows.Count{}) {
		t.Fatalf("record %+v", r)
	}
}

// Denials beyond the kernel's log rate limit: what arrives as records
// and what is reported as suppressed add up to what the kernel dropped.
func TestBurstBeyondRateLimitIsCounted(t *testing.T) {
	hs := newHost(t)
	sink := &flowstest.Sink{}
	c := collect(t, hs, sink, t.TempDir(), 0)
	const sent = 500
	var conn net.Conn
	if err := hs.a.Do(func() (err error) {
		conn, err = net.Dial("udp", netip.AddrPortFrom(addrB, 9091).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for range sent {
		conn.Write([]byte("x"))
		time.Sleep(100 * time.Microsecond) // below the neighbour queue's bound while ARP resolves
	}
	// What the kernel dropped is what its counter counted.
	cs, err := counters{hs.h}.Counters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := cs.Rules[ruleUDP].Packets
	if want < sent/2 {
		t.Fatalf("sent %d, the kernel's counter counts %d", sent, want)
	}
	sum := func() (logged, suppressed uint64) {
		got := sink.Received()
		for _, r := range toB(got.Records, 9091) {
			logged += r.Orig.Packets
		}
		return logged, got.Suppressed["deny "+ruleUDP]
	}
	waitFor(t, 10*time.Second, fmt.Sprintf("records and suppressed do not add up to %d", want), func() bool {
		l, s := sum()
		return l+s >= want
	})
	c.Close()
	l, s := sum()
	got := sink.Received()
	t.Logf("the kernel dropped %d: logged %d, suppressed %d, lost %v", want, l, s, got.Lost)
	if l+s != want || s == 0 || l < logRate {
		t.Fatalf("the kernel dropped %d: logged %d + suppressed %d (lost %v)", want, l, s, got.Lost)
	}
}

// While the Sink is down, flows wait in the spool; a restart of the
// collector keeps them; when the Sink returns they arrive, in order and
// once each.
func TestSinkDownSpoolsAcrossRestart(t *testing.T) {
	hs := newHost(t)
	hs.serve(t, 100)
	sink := &flowstest.Sink{}
	sink.SetFailing(true)
	dir := t.TempDir()
	c := collect(t, hs, sink, dir, 0)
	const made = 20
	for range made {
		hs.exchange(t, 100)
	}
	waitFor(t, 60*time.Second, "connections not all in the spool", func() bool {
		hs.sweep(t)
		s := c.Stats()
		return s.Destroy >= made && s.SpoolFiles > 0 && s.Records >= made
	})
	c.Close()
	if len(toB(sink.Received().Records, 8080)) != 0 {
		t.Fatal("a failing sink received records")
	}
	c = collect(t, hs, sink, dir, 0) // the restart
	defer c.Close()
	if s := c.Stats(); s.SpoolFiles == 0 {
		t.Fatalf("the spool did not survive a restart: %+v", s)
	}
	sink.SetFailing(false)
	waitFor(t, 30*time.Second, "spooled flows not delivered", func() bool {
		return len(toB(sink.Received().Records, 8080)) >= made && c.Stats().SpoolFiles == 0
	})
	got := sink.Received()
	if n := len(toB(got.Records, 8080)); n != made || got.OutOfOrder != 0 || sumLost(got.Lost) != 0 {
		t.Fatalf("made %d: delivered %d, out of order %d, lost %v", made, n, got.OutOfOrder, got.Lost)
	}
}

// A spool too small for what the Sink's outage brings refuses the newest
// records and counts them: made = delivered + counted as lost.
func TestFullSpoolCountsWhatItRefuses(t *testing.T) {
	hs := newHost(t)
	hs.serve(t, 100)
	sink := &flowstest.Sink{}
	sink.SetFailing(true)
	c := collect(t, hs, sink, t.TempDir(), 3000)
	defer c.Close()
	const made = 30
	for range made {
		hs.exchange(t, 100)
		time.Sleep(20 * time.Millisecond) // spread over several batches
	}
	waitFor(t, 60*time.Second, "connections not all sealed", func() bool {
		hs.sweep(t)
		s := c.Stats()
		return s.Destroy >= made && s.Lost[flows.LostSpoolFull] > 0
	})
	time.Sleep(500 * time.Millisecond) // the last batch sealed
	sink.SetFailing(false)
	var got flowstest.Received
	waitFor(t, 30*time.Second, "made != delivered + lost", func() bool {
		got = sink.Received()
		return uint64(len(toB(got.Records, 8080)))+got.Lost[flows.LostSpoolFull] >= made
	})
	n := uint64(len(toB(got.Records, 8080)))
	t.Logf("made %d: delivered %d, lost %v", made, n, got.Lost)
	if n+got.Lost[flows.LostSpoolFull] != made || n == 0 || got.Lost[flows.LostSpoolFull] == 0 {
		t.Fatalf("made %d: delivered %d, lost %v", made, n, got.Lost)
	}
}

func sumLost(m map[flows.Cause]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}
