package flows

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"

	"github.com/bulkhead-dev/bulkhead/internal/flows"
	"github.com/bulkhead-dev/bulkhead/internal/flows/flowstest"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

var (
	addrA = netip.MustParseAddr("10.232.1.2")
	addrB = netip.MustParseAddr("10.232.2.2")
)

// topology: a and b routed through h, which tracks connections (an nft
// table of the bench's own with a ct rule, as the dataplane's).
func topology(t *testing.T) (h, a, b *netns.NS) {
	nstest.RequireRoot(t)
	nstest.RequireCommand(t, "nft")
	h, a, b = nstest.NS(t, "bhfl"), nstest.NS(t, "bhfl"), nstest.NS(t, "bhfl")
	for i, w := range []*netns.NS{a, b} {
		v := nstest.Name("bhfl")
		run(t, "ip", "-n", h.Name, "link", "add", v, "type", "veth", "peer", "name", "eth0", "netns", w.Name)
		run(t, "ip", "-n", h.Name, "addr", "add", fmt.Sprintf("10.232.%d.1/30", i+1), "dev", v)
		run(t, "ip", "-n", h.Name, "link", "set", v, "up")
		run(t, "ip", "-n", w.Name, "addr", "add", fmt.Sprintf("10.232.%d.2/30", i+1), "dev", "eth0")
		run(t, "ip", "-n", w.Name, "link", "set", "eth0", "up")
		run(t, "ip", "-n", w.Name, "route", "add", "default", "via", fmt.Sprintf("10.232.%d.1", i+1))
	}
	nstest.Run(t, h, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	// Closed (reset) connections leave conntrack after 1 s, not 10.
	nstest.Run(t, h, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_close=1")
	nstest.Run(t, a, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000")
	cmd := exec.Command("ip", "netns", "exec", h.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(`table inet bhfl {
	chain bhfl_fwd {
		type filter hook forward priority 0; policy accept;
		ct state established,related accept
		tcp dport 8000-8999 accept
		drop
	}
}`)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft table in %s: %v: %s", h.Name, err, out)
	}
	return h, a, b
}

func run(t *testing.T, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v: %s", argv, err, out)
	}
}

// serve starts the server process in b on ports first..last.
func serve(t *testing.T, b *netns.NS, first, last uint16) {
	cmd := exec.Command("ip", "netns", "exec", b.Name, os.Args[0])
	cmd.Env = append(os.Environ(), "BHFL_ROLE=serve", "BHFL_ADDR="+addrB.String(), fmt.Sprintf("BHFL_PORTS=%d-%d", first, last))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	buf := make([]byte, 6)
	if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("server in %s: %q, %v", b.Name, buf, err)
	}
}

// load runs the load process in a against b:port for d and returns how
// many connections it made and how many failed.
func load(t *testing.T, a *netns.NS, port uint16, workers int, d time.Duration) (made, failed uint64) {
	cmd := exec.Command("ip", "netns", "exec", a.Name, os.Args[0])
	cmd.Env = append(os.Environ(), "BHFL_ROLE=load", "BHFL_DST="+netip.AddrPortFrom(addrB, port).String(),
		fmt.Sprintf("BHFL_WORKERS=%d", workers), fmt.Sprintf("BHFL_SECONDS=%g", d.Seconds()))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("load in %s: %v", a.Name, err)
	}
	if _, err := fmt.Sscan(string(out), &made, &failed); err != nil {
		t.Fatalf("load in %s: %q: %v", a.Name, out, err)
	}
	return made, failed
}

// flush deletes every conntrack entry in h: each one's DESTROY event
// comes now instead of after its timeout.
func flush(t *testing.T, h *netns.NS) {
	f, err := os.Open(h.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := conntrack.Dial(&netlink.Config{NetNS: int(f.Fd())})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
}

// A mode of collection: off, on, or on without UPDATE events.
type mode int

const (
	off mode = iota
	on
	onNoUpdates
	numModes
)

func (m mode) String() string { return [...]string{"off", "on", "on, no updates"}[m] }

type phase struct {
	mode         mode
	round        int
	port         uint16
	rate         float64
	made, failed uint64
	delivered    uint64
	lost         map[flows.Cause]uint64
	stats        flows.Stats
	cpu          time.Duration
	ctInvalid    uint64 // conntrack's own counts in h during the phase
	ctDrop       uint64
}

// TestConnectionRate runs rounds of phases, one per mode of collection in
// a rotating order, each at the highest rate the load generator reaches,
// and reports the rates, the ratios to collection off within each round,
// and for each phase with collection: connections made, records
// delivered, lost by cause, and unaccounted.
func TestConnectionRate(t *testing.T) {
	d, rounds := 2*time.Second, 1
	if os.Getenv("BULKHEAD_BENCH") == "1" {
		d, rounds = 5*time.Second, 6
	}
	workers := 32
	h, a, b := topology(t)
	var phases []*phase
	for r := range rounds {
		for i := range int(numModes) {
			phases = append(phases, &phase{mode: mode((i + r) % int(numModes)), round: r, port: uint16(8000 + len(phases))})
		}
	}
	serve(t, b, 8000, uint16(8000+len(phases)-1))
	for _, p := range phases {
		runPhase(t, h, a, p, workers, d)
	}
	report(t, phases, rounds)
}

func runPhase(t *testing.T, h, a *netns.NS, p *phase, workers int, d time.Duration) {
	flush(t, h)
	time.Sleep(time.Second)
	var c *flows.Collector
	sink := &flowstest.Sink{}
	if p.mode != off {
		var err error
		c, err = flows.New(flows.Config{NetNS: h.Path(), StateDir: t.TempDir(), Sink: sink, LogGroup: 9,
			SkipUpdates: p.mode == onNoUpdates})
		if err != nil {
			t.Fatal(err)
		}
	}
	cpu0 := cpuTime() // this process: the collector
	inv0, drop0 := ctStats(t, h)
	p.made, p.failed = load(t, a, p.port, workers, d)
	inv1, drop1 := ctStats(t, h)
	p.ctInvalid, p.ctDrop = inv1-inv0, drop1-drop0
	p.rate = float64(p.made) / d.Seconds()
	p.cpu = cpuTime() - cpu0
	if c == nil {
		return
	}
	flush(t, h) // what is still in the table: its DESTROY now
	var last uint64
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		n := c.Stats().Destroy
		if n == last && n > 0 && c.Stats().SpoolFiles == 0 {
			break
		}
		last = n
	}
	c.Close()
	p.stats = c.Stats()
	got := sink.Received()
	for _, r := range got.Records {
		if r.Dst.Addr == addrB && r.Dst.Port == p.port && r.Src.Addr == addrA {
			p.delivered++
		}
	}
	p.lost = got.Lost
}

// ctStats sums conntrack's "invalid" and "drop" counts over the CPUs in
// h (/proc/net/stat/nf_conntrack: packets conntrack itself refused).
func ctStats(t *testing.T, h *netns.NS) (invalid, drop uint64) {
	out := nstest.Run(t, h, "cat", "/proc/net/stat/nf_conntrack")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	head := strings.Fields(lines[0])
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		for i, name := range head {
			if i >= len(f) {
				break
			}
			n, _ := strconv.ParseUint(f[i], 16, 64)
			switch name {
			case "invalid":
				invalid += n
			case "drop":
				drop += n
			}
		}
	}
	return invalid, drop
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func report(t *testing.T, phases []*phase, rounds int) {
	rate := make([][numModes]float64, rounds)
	for _, p := range phases {
		rate[p.round][p.mode] = p.rate
		t.Logf("round %d, collection %-14s port %d: %6.0f connections/s (%d made, %d failed), process CPU %.2f s; conntrack invalid %d, drop %d",
			p.round, p.mode, p.port, p.rate, p.made, p.failed, p.cpu.Seconds(), p.ctInvalid, p.ctDrop)
		if p.mode == off {
			continue
		}
		var lost uint64
		for _, n := range p.lost {
			lost += n
		}
		un := int64(p.made) - int64(p.delivered) - int64(lost)
		t.Logf("    delivered %d, lost %v, unaccounted %d; events new %d update %d destroy %d",
			p.delivered, p.lost, un, p.stats.New, p.stats.Update, p.stats.Destroy)
		if un > 0 {
			t.Errorf("port %d: %d connections made but neither delivered nor counted as lost", p.port, un)
		}
	}
	for _, m := range []mode{on, onNoUpdates} {
		var ratios []float64
		var sumOn, sumOff float64
		for r := range rounds {
			ratios = append(ratios, rate[r][m]/rate[r][off])
			sumOn, sumOff = sumOn+rate[r][m], sumOff+rate[r][off]
		}
		slices.Sort(ratios)
		t.Logf("collection %s / off: ratio of rates %.3f (of the sums; per round: median %.3f, %.3f-%.3f)",
			m, sumOn/sumOff, ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1])
	}
}
