package nft

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/load"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// churnPolicy is one of issue 8's two alternated policy sets: they differ
// in a few ports and in 10 versus 50 extra /32 ipBlock rules. The
// ipBlock rules come first and the rules are unnamed, as a
// NetworkPolicy's are: the rule that lets a reach b on 8080 has another
// id (its index) in each set, though both allow that connection.
func churnPolicy(variant int) string {
	n := 10 + 40*variant
	var b strings.Builder
	b.WriteString(`
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: b-in, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: b}}}
  isolate: [ingress]
  ingress:
`)
	for i := range n {
		fmt.Fprintf(&b, "    - {action: allow, from: [{cidr: 192.0.%d.%d/32}], services: [{protocol: tcp, port: %d}]}\n", i/200, i%200+1, 443+variant)
	}
	fmt.Fprintf(&b, "    - {action: allow, from: [{selector: {matchLabels: {app: a}}}], services: [{protocol: tcp, port: 8080}, {protocol: tcp, port: %d}]}\n", 9000+variant)
	fmt.Fprintf(&b, `---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: a-out, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: a}}}
  isolate: [egress]
  egress:
    - {action: allow, to: [{selector: {matchLabels: {app: b}}}], services: [{protocol: tcp, port: 8080}, {protocol: tcp, port: %d}]}
`, 7000+variant)
	return b.String()
}

// churner alternates the two sets through one Compiler, as the agent's
// SetPolicies does.
type churner struct {
	h    *testHost
	d    *Dataplane
	c    *compile.Compiler
	sets [2]*policy.Set
}

func newChurner(h *testHost, d *Dataplane) *churner {
	ch := &churner{h: h, d: d}
	for v := range ch.sets {
		set, errs := load.Bytes("churn.yaml", []byte(h.workloadsYAML()+"---\n"+churnPolicy(v)))
		if len(errs) > 0 {
			h.t.Fatalf("load: %v", errs)
		}
		ch.sets[v] = set
	}
	c, err := compile.New(ch.sets[0], "h1", nil)
	if err != nil {
		h.t.Fatal(err)
	}
	ch.c = c
	return ch
}

func (ch *churner) apply(v int) {
	ch.h.t.Helper()
	if err := ch.c.SetPolicies(ch.sets[v]); err != nil {
		ch.h.t.Fatalf("SetPolicies: %v", err)
	}
	s := ch.c.State()
	if err := ch.d.Apply(context.Background(), ch.h.desired(s, ch.sets[v])); err != nil {
		ch.h.t.Fatalf("Apply: %v", err)
	}
}

// tableCounts reads the kernel table: the elements of every set (by name
// without the generation), the chains, and the generation.
func tableCounts(t *testing.T, d *Dataplane) (map[string]int, int) {
	t.Helper()
	f, err := readTable(d.conn)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, s := range f.sets {
		els, err := readElements(d.nsFd, s)
		if err != nil {
			t.Fatal(err)
		}
		out[baseName(s)] += len(els)
	}
	out["(chains)"] = len(f.chains)
	return out, f.maxGen
}

func countsString(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, m[k])
	}
	return b.String()
}

// Issue 8: alternating two policy sets on an agent must leave nothing
// behind. After the first pair of switches, every pair ends with the
// kernel table exactly as large as the one before (every map, every
// chain), in the same generation: a change of the policy's CIDRs is a
// delta, not a new generation.
func TestChurnLeavesNothingBehind(t *testing.T) {
	pairs := 25
	if os.Getenv("BULKHEAD_SOAK") != "" {
		pairs = 500
	}
	h := newTestHost(t, "a", "b", "c")
	d := h.newDataplane(Options{})
	ch := newChurner(h, d)
	ch.apply(0)
	var first map[string]int
	for i := range pairs {
		ch.apply(1)
		ch.apply(0)
		got, gen := tableCounts(t, d)
		st := ch.c.State()
		got["(compiler outcome table)"], got["(compiler rule table)"] = len(st.Outcomes), len(st.Rules)
		got["(compiler identities)"] = st.Stats().Identities
		if gen != 1 {
			t.Fatalf("pair %d: generation %d: a switch wrote a new generation", i, gen)
		}
		if i == 0 {
			first = got
			continue
		}
		if !maps.Equal(got, first) {
			t.Fatalf("pair %d: table%s\nafter the first pair:%s", i, countsString(got), countsString(first))
		}
	}
	t.Logf("table after %d switches:%s", 2*pairs+1, countsString(first))
}

// A switch between two policy sets must never drop a connection that both
// allow. Two ways to look: a connection attempted in the gap between the
// preparatory and the switch transaction of every Apply (where a change
// made too early shows at once), and connections opened continuously
// while the sets alternate. Each must succeed; a dropped SYN is
// retransmitted after 1 s, so one taking longer than 900 ms met a drop.
func TestChurnDropsNothingBothAllow(t *testing.T) {
	switches := 40
	if os.Getenv("BULKHEAD_SOAK") != "" {
		switches = 600
	}
	h := newTestHost(t, "a", "b", "c")
	a, b := h.wls["a"], h.wls["b"]
	b.listen(t, "tcp", 8080)
	d := h.newDataplane(Options{})
	ch := newChurner(h, d)
	ch.apply(0)
	var gapFails []string
	gaps := 0
	d.afterPrepare = func() {
		gaps++
		if c, err := a.dialWithin(b.v4, 8080, 900*time.Millisecond); err != nil {
			gapFails = append(gapFails, err.Error())
		} else {
			c.Close()
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var fails []string
	tries := 0
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100000 {
				select {
				case <-stop:
					return
				default:
				}
				c, err := a.dialWithin(b.v4, 8080, 900*time.Millisecond)
				mu.Lock()
				tries++
				if err != nil {
					fails = append(fails, err.Error())
				}
				mu.Unlock()
				if err == nil {
					c.Close()
				}
			}
		}()
	}
	for i := range switches {
		ch.apply(1 - i%2)
	}
	close(stop)
	wg.Wait()
	d.afterPrepare = nil
	if len(gapFails) > 0 {
		t.Errorf("%d of %d connections attempted between the two transactions of an Apply failed: %s", len(gapFails), switches, gapFails[0])
	}
	if len(fails) > 0 {
		t.Errorf("%d of %d connections during %d switches failed: %s", len(fails), tries, switches, fails[0])
	}
	if gaps != switches {
		t.Errorf("%d connections in the gaps of %d switches", gaps, switches)
	}
	t.Logf("%d connections during %d switches, %d in the gaps", tries, switches, gaps)
	expectTCP(t, []tcpCase{{h.wls["c"], b.v4, 8080, resTimeout}})
}

const churnWorkloads = `apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: bulkhead.dev/v1
kind: Workload
metadata: {name: a, namespace: app, labels: {app: a}}
spec: {host: h1, ips: [10.9.0.1]}
---
apiVersion: bulkhead.dev/v1
kind: Workload
metadata: {name: b, namespace: app, labels: {app: b}}
spec: {host: h1, ips: [10.9.0.2]}
`

// An outcome (or identity) the new State frees keeps its elements for
// one more Apply:
// the kernel reads a set's elements at each lookup, so a packet whose walk
// spans the switch may have read the old outcome number from the port
// map before it and look it up after it; deleting the elements at the
// switch would make it miss, fall through and be denied, though both
// States allow it. The next Apply deletes them, or rewrites them when the
// number is taken again.
func TestFreedOutcomesLingerOneApply(t *testing.T) {
	sets := [2]*policy.Set{}
	for v := range sets {
		set, errs := load.Bytes("unit.yaml", []byte(churnWorkloads+"---\n"+churnPolicy(v)))
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		sets[v] = set
	}
	c, err := compile.New(sets[0], "h1", nil)
	if err != nil {
		t.Fatal(err)
	}
	m := testModel()
	m.create(newTx(table()), dataplane.Desired{State: c.State()})
	m.sweep(newTx(table()))
	outs, attrs := m.b.n(setOutcomes), m.b.n(setGuard)
	step := func(v int) *tx {
		if err := c.SetPolicies(sets[v]); err != nil {
			t.Fatal(err)
		}
		tx := newTx(table())
		st := c.State()
		m.update(tx, dataplane.Desired{State: st})
		m.sweep(tx)
		fresh := testModel()
		fresh.create(newTx(table()), dataplane.Desired{State: st})
		trim := func(s []string) []string { return s[:len(st.Outcomes)] }
		live := func(refs map[string]int) map[string]int {
			out := map[string]int{}
			for k, n := range refs {
				if n != 0 {
					out[k] = n
				}
			}
			return out
		}
		if !slices.Equal(trim(m.outcomes), trim(fresh.outcomes)) || !slices.Equal(trim(m.outRule), trim(fresh.outRule)) ||
			!maps.Equal(live(m.ruleRefs), live(fresh.ruleRefs)) || !maps.Equal(m.ruleOf, fresh.ruleOf) {
			t.Errorf("set %d: the model's outcomes differ from a new generation's:\n%q %x %v\n%q %x %v", v,
				m.outcomes, m.outRule, live(m.ruleRefs), fresh.outcomes, fresh.outRule, live(fresh.ruleRefs))
		}
		return tx
	}
	for i := range 4 {
		tx := step(1 - i%2)
		if n := len(tx.dels[outs]) - len(tx.adds[outs]); n > 0 {
			t.Errorf("switch %d deletes %d outcome elements at once", i, n)
		}
		if n := len(tx.dels[attrs]) - len(tx.adds[attrs]); n > 0 {
			t.Errorf("switch %d deletes %d identities at once", i, n)
		}
		if i%2 == 1 && (len(m.lingering) == 0 || len(m.lingerIdent) == 0) {
			t.Errorf("switch %d freed %d outcomes and %d identities: the sets should differ in rules and CIDRs", i, len(m.lingering), len(m.lingerIdent))
		}
	}
	freed := len(m.lingering)
	if tx := step(0); len(tx.dels[outs]) != freed || len(m.lingering) != 0 {
		t.Errorf("the Apply after: %d outcome elements deleted, %d still kept; want %d and 0", len(tx.dels[outs]), len(m.lingering), freed)
	}
}
