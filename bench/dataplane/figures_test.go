package benchdataplane

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// config is one firewall configuration under test, with its own topology.
type config struct {
	name    string
	tp      *topo
	enforce bool // a policy is loaded: a connection to a port it does not allow must be dropped
}

// sample is what one round measured for one configuration.
type sample struct {
	crr1, crr8 crrResult
	bulk       bulkResult
}

// params bound a run: rounds, the time per workload, configuration and
// round, and the slices that time is cut into (see runRounds).
type params struct {
	rounds, slices int
	dur            time.Duration
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

var serverAddr = netip.AddrPortFrom(ServerAddr, ServerPort)

// checkEnforced verifies that a configuration really filters: with a
// policy loaded, a connection to a port no rule allows gets no answer
// (dropped); without one, the server's kernel refuses it at once.
func checkEnforced(cfg config) error {
	_, err := crr(cfg.tp.client, netip.AddrPortFrom(ServerAddr, 9), 1, 300*time.Millisecond)
	if err == nil {
		return fmt.Errorf("bench: %s: a connection to port 9 completed", cfg.name)
	}
	var refused bool
	_ = cfg.tp.client.Do(func() error {
		c, err := dialOnce(netip.AddrPortFrom(ServerAddr, 9), 300*time.Millisecond)
		if c != nil {
			c.Close()
		}
		refused = err != nil && strings.Contains(err.Error(), "refused")
		return nil
	})
	if cfg.enforce == refused {
		return fmt.Errorf("bench: %s: connection to an unlisted port refused=%v, want the firewall to drop it=%v", cfg.name, refused, cfg.enforce)
	}
	return nil
}

// runRounds measures every configuration once per round, in the same
// order every round (A B C … A B C …), so that slow phases of the shared
// machine touch all of them alike; inside a round, each workload runs on
// every configuration before the next workload starts.
func runRounds(t *testing.T, cfgs []config, p params) [][]sample {
	out := make([][]sample, len(cfgs))
	for i, cfg := range cfgs {
		if err := checkEnforced(cfg); err != nil {
			t.Fatal(err)
		}
		if _, err := crr(cfg.tp.client, serverAddr, 2, p.dur/6); err != nil { // warm up
			t.Fatalf("%s: warm-up: %v", cfg.name, err)
		}
		out[i] = make([]sample, 0, p.rounds)
	}
	for r := 0; r < p.rounds; r++ {
		start := time.Now()
		samples := make([]sample, len(cfgs))
		// Workload by workload, and inside a workload slice by slice,
		// every configuration in turn: the numbers a ratio pairs are
		// measured seconds apart, not a minute.
		slice := p.dur / time.Duration(p.slices)
		for _, w := range []func(cfg config, s *sample) error{
			func(cfg config, s *sample) error {
				r, err := crr(cfg.tp.client, serverAddr, 1, slice)
				s.crr1 = s.crr1.merge(r)
				return err
			},
			func(cfg config, s *sample) error {
				r, err := crr(cfg.tp.client, serverAddr, 8, slice)
				s.crr8 = s.crr8.merge(r)
				return err
			},
			func(cfg config, s *sample) error {
				r, err := bulk(cfg.tp.client, serverAddr, slice)
				s.bulk = s.bulk.merge(r)
				return err
			},
		} {
			for range p.slices {
				for i, cfg := range cfgs {
					if err := w(cfg, &samples[i]); err != nil {
						t.Fatalf("%s: %v", cfg.name, err)
					}
				}
			}
		}
		for i := range samples { // keep the percentiles, not every latency
			samples[i].crr1.lats, samples[i].crr8.lats = nil, nil
		}
		for i, cfg := range cfgs {
			s := samples[i]
			out[i] = append(out[i], s)
			t.Logf("round %d %-16s crr1 %7.0f/s (p50 %v p99 %v, %d errors)  crr8 %7.0f/s (p50 %v p99 %v, %d errors)  bulk %5.2f Gbit/s",
				r+1, cfg.name, s.crr1.Rate(), s.crr1.P50.Round(time.Microsecond), s.crr1.P99.Round(time.Microsecond), s.crr1.Errors,
				s.crr8.Rate(), s.crr8.P50.Round(time.Microsecond), s.crr8.P99.Round(time.Microsecond), s.crr8.Errors, s.bulk.Gbps())
		}
		t.Logf("round %d took %v", r+1, time.Since(start).Round(time.Second))
	}
	return out
}

func median[T float64 | time.Duration](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// metric extracts one number from a sample.
type metric struct {
	name string
	get  func(sample) float64
}

var metrics = []metric{
	{"crr1", func(s sample) float64 { return s.crr1.Rate() }},
	{"crr8", func(s sample) float64 { return s.crr8.Rate() }},
	{"bulk", func(s sample) float64 { return s.bulk.Gbps() }},
}

// ratio is the median over rounds of a/b measured in the same round.
func ratio(a, b []sample, m metric) float64 {
	rs := make([]float64, 0, len(a))
	for r := range a {
		if r < len(b) && m.get(b[r]) > 0 {
			rs = append(rs, m.get(a[r])/m.get(b[r]))
		}
	}
	if len(rs) == 0 {
		return 0
	}
	return median(rs)
}

func column(ss []sample, f func(sample) float64) float64 {
	xs := make([]float64, len(ss))
	for i, s := range ss {
		xs[i] = f(s)
	}
	return median(xs)
}

func durColumn(ss []sample, f func(sample) time.Duration) time.Duration {
	xs := make([]time.Duration, len(ss))
	for i, s := range ss {
		xs[i] = f(s)
	}
	return median(xs)
}

// medianTable formats the medians of every configuration as Markdown.
func medianTable(cfgs []config, res [][]sample) string {
	var b strings.Builder
	b.WriteString("| configuration | conn/s, 1 client | p50 / p99 | conn/s, 8 clients | p50 / p99 | bulk Gbit/s |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: |\n")
	us := func(d time.Duration) string { return strconv.FormatInt(d.Microseconds(), 10) }
	for i, cfg := range cfgs {
		ss := res[i]
		fmt.Fprintf(&b, "| %s | %.0f | %s / %s µs | %.0f | %s / %s µs | %.2f |\n", cfg.name,
			column(ss, metrics[0].get), us(durColumn(ss, func(s sample) time.Duration { return s.crr1.P50 })),
			us(durColumn(ss, func(s sample) time.Duration { return s.crr1.P99 })),
			column(ss, metrics[1].get), us(durColumn(ss, func(s sample) time.Duration { return s.crr8.P50 })),
			us(durColumn(ss, func(s sample) time.Duration { return s.crr8.P99 })),
			column(ss, metrics[2].get))
	}
	return b.String()
}

// ratioTable formats every configuration's ratios to the baselines named.
func ratioTable(cfgs []config, res [][]sample, bases []string) string {
	idx := map[string]int{}
	for i, c := range cfgs {
		idx[c.name] = i
	}
	var b strings.Builder
	b.WriteString("| configuration |")
	for _, base := range bases {
		for _, m := range metrics {
			fmt.Fprintf(&b, " %s ÷ %s |", m.name, base)
		}
	}
	b.WriteString("\n| --- |" + strings.Repeat(" ---: |", len(bases)*len(metrics)) + "\n")
	for i, cfg := range cfgs {
		fmt.Fprintf(&b, "| %s |", cfg.name)
		for _, base := range bases {
			j, ok := idx[base]
			for _, m := range metrics {
				if !ok {
					b.WriteString(" – |")
					continue
				}
				fmt.Fprintf(&b, " %.2f |", ratio(res[i], res[j], m))
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestSmoke runs every workload for a moment without a firewall and with
// conntrack only, so that the default suite keeps the harness working.
func TestSmoke(t *testing.T) {
	nstest.RequireRoot(t)
	if err := netns.DeleteAll(smokePrefix); err != nil {
		t.Fatal(err)
	}
	none := config{name: "no firewall", tp: newTopo(t, smokePrefix, "none")}
	ct := config{name: "conntrack only", tp: newTopo(t, smokePrefix, "conntrack")}
	if err := conntrackOnly(ct.tp.host); err != nil {
		t.Fatal(err)
	}
	cfgs := []config{none, ct}
	res := runRounds(t, cfgs, params{rounds: 1, slices: 2, dur: 200 * time.Millisecond})
	for i, cfg := range cfgs {
		s := res[i][0]
		if s.crr1.Conns == 0 || s.crr8.Conns == 0 || s.bulk.Bytes == 0 {
			t.Errorf("%s: measured nothing: %+v", cfg.name, s)
		}
	}
	t.Log("\n" + medianTable(cfgs, res) + "\n" + ratioTable(cfgs, res, []string{"no firewall"}))
}
