package benchdataplane

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// elementCounter catches the "elements" attribute of the nft dataplane's
// debug record "applied": how many set elements one transaction wrote.
type elementCounter struct{ last atomic.Int64 }

func (e *elementCounter) Enabled(context.Context, slog.Level) bool { return true }
func (e *elementCounter) WithAttrs([]slog.Attr) slog.Handler       { return e }
func (e *elementCounter) WithGroup(string) slog.Handler            { return e }
func (e *elementCounter) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "elements" {
			e.last.Store(a.Value.Int64())
		}
		return true
	})
	return nil
}

func pairAttachments(tp *topo) []dataplane.Attachment {
	return []dataplane.Attachment{
		{Workload: "bench/client", Interface: tp.clientIf, Addrs: []netip.Addr{ClientAddr}},
		{Workload: "bench/server", Interface: tp.serverIf, Addrs: []netip.Addr{ServerAddr}},
	}
}

func describe(st *compile.State) string {
	s := st.Stats()
	return fmt.Sprintf("%d addresses, %d outside ranges, %d identities, table keys %d ingress + %d egress (%d + %d port ranges), %d outcomes, %d rule ids",
		s.Addrs, s.Ranges, s.Identities, s.Entries[0], s.Entries[1], s.PortRanges[0], s.PortRanges[1], s.Outcomes, s.Rules)
}

// bulkheadConfigs builds one topology per policy size with Bulkhead's
// nftables dataplane holding the state compiled for BenchHost, and, at
// the largest size, times first loads and one-rule changes.
func bulkheadConfigs(t *testing.T, sets []*policy.Set, report *strings.Builder) ([]config, extraFigures) {
	ctx := context.Background()
	var cfgs []config
	var x extraFigures
	type loaded struct {
		s  *policy.Set
		st *compile.State
		tp *topo
	}
	var largest *loaded
	for _, s := range sets {
		name := "bulkhead " + sizeName(CountRules(s))
		start := time.Now()
		c, err := compile.New(s, BenchHost, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		st := c.State()
		compiled := time.Since(start)
		tp := newTopo(t, figuresPrefix, name)
		ec := &elementCounter{}
		dp, err := nft.New(nft.Options{NetNS: tp.host.Path(), Logger: slog.New(ec)})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(func() { dp.Close() })
		start = time.Now()
		if err := dp.Apply(ctx, dataplane.Desired{State: st, Set: s, Attachments: pairAttachments(tp)}); err != nil {
			// Report it and go on: the other configurations are still worth measuring.
			fmt.Fprintf(report, "%s: NOT MEASURED: first Apply failed after %v: %v\n", name, time.Since(start).Round(time.Millisecond), err)
			t.Errorf("%s: first apply: %v", name, err)
			continue
		}
		load := time.Since(start)
		fmt.Fprintf(report, "%s: compiled for %s in %v; first Apply %v, %d set elements written (%s)\n",
			name, BenchHost, compiled.Round(time.Millisecond), load.Round(time.Millisecond), ec.last.Load(), describe(st))
		cfgs = append(cfgs, config{name: name, tp: tp, enforce: true})
		largest = &loaded{s: s, st: st, tp: tp}
	}
	if largest == nil {
		return cfgs, x
	}
	// The update figures at the largest size that loaded (the goals are
	// for 100k rules; goals() says when a smaller size stood in).
	x.size = sizeName(CountRules(largest.s))
	x.initialLoad = firstLoads(t, largest.s, largest.st, largest.tp, report)
	x.oneRule, x.addRule = oneRule(t, largest.s, largest.st, report)
	if os.Getenv("BULKHEAD_BENCH_AGENT") != "0" { // 0: leave the standalone agent's figures out
		measureAgent(t, largest.s, report, &x)
	}
	return cfgs, x
}

// firstLoads times three more first loads of st, each into a fresh
// namespace with nothing else to do, and returns their median.
func firstLoads(t *testing.T, s *policy.Set, st *compile.State, tp *topo, report *strings.Builder) time.Duration {
	var loads []time.Duration
	for range 3 {
		scratch := nstest.NS(t, figuresPrefix+"l")
		dp, err := nft.New(nft.Options{NetNS: scratch.Path()})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = dp.Apply(context.Background(), dataplane.Desired{State: st, Set: s, Attachments: pairAttachments(tp)})
		loads = append(loads, time.Since(start))
		dp.Close()
		if err != nil {
			t.Fatalf("first load into %s: %v", scratch.Name, err)
		}
		if err := scratch.Delete(); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(loads)
	fmt.Fprintf(report, "first load of the largest state that loads, into fresh namespaces: %v\n", loads)
	return loads[len(loads)/2]
}

// withPort9 returns s with the test pair's rule changed: edit adds port 9
// to its services (the rule ids stay as they are); otherwise a second
// rule allowing port 9 is added after it (every later rule id moves).
func withPort9(s *policy.Set, edit bool) *policy.Set {
	out := *s
	out.Policies = slices.Clone(s.Policies)
	for i, p := range out.Policies {
		if p.Namespace != "bench" || p.Name != "bench-server" {
			continue
		}
		np := *p
		np.Ingress = slices.Clone(p.Ingress)
		r := np.Ingress[0]
		r.Services = append(slices.Clone(r.Services), policy.Service{Protocol: policy.TCP, Port: 9})
		if edit {
			np.Ingress[0] = r
		} else {
			r.ID = "bench/bench-server/port-9"
			r.Services = r.Services[1:]
			np.Ingress = append(np.Ingress, r)
		}
		out.Policies[i] = &np
	}
	return &out
}

// oneRule times Apply for a one-rule change, on a topology of its own
// holding st0: 20 applies alternating forth and back, for an edited rule
// (the pair's rule also allows port 9) and for an added one. The states
// come from one Compiler through SetPolicies, as the agent makes them, so
// they share what did not change and Apply diffs only the change; no-op
// applies of equal states compiled apart show what a whole-state
// comparison would cost. After the first two applies a connection checks
// that the kernel enforces what was applied.
func oneRule(t *testing.T, s *policy.Set, st0 *compile.State, report *strings.Builder) (edit, add time.Duration) {
	cfg := config{name: "update", tp: newTopo(t, figuresPrefix, "update")}
	ec := &elementCounter{}
	dp, err := nft.New(nft.Options{NetNS: cfg.tp.host.Path(), Logger: slog.New(ec)})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	apply := func(st *compile.State, set *policy.Set) (time.Duration, error) {
		start := time.Now()
		err := dp.Apply(context.Background(), dataplane.Desired{State: st, Set: set, Attachments: pairAttachments(cfg.tp)})
		return time.Since(start), err
	}
	if _, err := apply(st0, s); err != nil {
		t.Fatalf("update topology: first apply: %v", err)
	}
	// Two equal states compiled apart share no shards: applying them in
	// turn compares whole states every time and writes nothing.
	same, err := compile.Compile(s, BenchHost, st0)
	if err != nil {
		t.Fatal(err)
	}
	var noop []time.Duration
	ec.last.Store(0)
	for i := range 10 {
		d, err := apply([]*compile.State{same, st0}[i%2], s)
		if err != nil {
			t.Fatalf("no-op apply: %v", err)
		}
		noop = append(noop, d)
	}
	fmt.Fprintf(report, "no-op Apply (equal states compiled apart, in turn) at %s rules: median %v, elements written %d\n",
		sizeName(CountRules(s)), median(noop), ec.last.Load())
	c, err := compile.New(s, BenchHost, st0)
	if err != nil {
		t.Fatal(err)
	}
	st0 = c.State()
	if _, err := apply(st0, s); err != nil {
		t.Fatalf("update topology: apply of the compiler's state: %v", err)
	}
	for _, isEdit := range []bool{true, false} {
		kind := map[bool]string{true: "edited", false: "added"}[isEdit]
		s1 := withPort9(s, isEdit)
		start := time.Now()
		if err := c.SetPolicies(s1); err != nil {
			t.Fatal(err)
		}
		st1 := c.State()
		compiled := time.Since(start)
		if err := c.SetPolicies(s); err != nil {
			t.Fatal(err)
		}
		st0 = c.State()
		fmt.Fprintf(report, "one %s rule at %s rules: SetPolicies + State %v\n", kind, sizeName(CountRules(s)), compiled.Round(time.Microsecond))
		var times []time.Duration
		var elems []int64
		for i := range 20 {
			st, set := st1, s1
			if i%2 == 1 {
				st, set = st0, s
			}
			d, err := apply(st, set)
			if err != nil {
				fmt.Fprintf(report, "one %s rule: Apply FAILED at apply %d of 20 (%s): %v\n", kind, i+1,
					map[bool]string{true: "back to the original", false: "to the changed state"}[i%2 == 1], err)
				t.Errorf("one %s rule: apply %d: %v", kind, i+1, err)
				return edit, add
			}
			times = append(times, d)
			elems = append(elems, ec.last.Load())
			if i < 2 {
				checkPort9(t, cfg, i%2 == 0)
			}
		}
		fwd, back := compile.Diff(st0, st1), compile.Diff(st1, st0)
		fmt.Fprintf(report, "one %s rule at %s rules: Apply median %v, min %v, max %v (20 applies, alternating); compile delta %d / %d elements, nft elements written %v\n",
			kind, sizeName(CountRules(s)), median(times), slices.Min(times), slices.Max(times), fwd.Len(), back.Len(), elems[:2])
		if isEdit {
			edit = median(times)
		} else {
			add = median(times)
		}
	}
	return edit, add
}

// checkPort9 checks that a connection from the client to the server's
// port 9 (where nothing listens) is let through — refused by the server's
// kernel — when allowed, and dropped when not.
func checkPort9(t *testing.T, cfg config, allowed bool) {
	t.Helper()
	c := cfg
	c.enforce = !allowed
	if err := checkEnforced(c); err != nil {
		t.Fatalf("after a one-rule apply (port 9 allowed: %v): %v", allowed, err)
	}
}
