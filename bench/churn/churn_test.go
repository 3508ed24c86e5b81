// Package benchchurn measures policy churn (issue 8, "Policy churn must
// leave nothing behind"): two small policy sets alternated on one host,
// through the agent's path (Compiler.SetPolicies, State, nft Apply), many
// thousand times. Apply time and the kernel table's size must stay flat.
// See README.md for the command; results in docs/benchmarks.md.
package benchchurn

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/load"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// workloads are issue 8's three, on this host. Their interfaces need not
// exist: the table names them, nothing here sends traffic.
const workloads = `apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: bulkhead.dev/v1
kind: Workload
metadata: {name: a, namespace: app, labels: {app: a}}
spec: {host: h1, ips: [10.77.0.1]}
---
apiVersion: bulkhead.dev/v1
kind: Workload
metadata: {name: b, namespace: app, labels: {app: b}}
spec: {host: h1, ips: [10.77.0.2]}
---
apiVersion: bulkhead.dev/v1
kind: Workload
metadata: {name: c, namespace: app, labels: {app: c}}
spec: {host: h1, ips: [10.77.0.3]}
`

// policySet is one of the two sets: they differ in a few ports and in 10
// versus 50 extra /32 ipBlock rules (unnamed, so the rules after them
// change ids too).
func policySet(variant int) string {
	var b strings.Builder
	b.WriteString(`---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: b-in, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: b}}}
  isolate: [ingress]
  ingress:
`)
	for i := range 10 + 40*variant {
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

var attachments = []dataplane.Attachment{
	{Workload: "app/a", Interface: "bhch-a", Addrs: []netip.Addr{netip.MustParseAddr("10.77.0.1")}},
	{Workload: "app/b", Interface: "bhch-b", Addrs: []netip.Addr{netip.MustParseAddr("10.77.0.2")}},
	{Workload: "app/c", Interface: "bhch-c", Addrs: []netip.Addr{netip.MustParseAddr("10.77.0.3")}},
}

// snapshot is the table and the compiler's numbering at one moment.
type snapshot struct {
	apply     int
	elements  map[string]int // by map, from the dump
	dumpLines int
	outcomes  int // the compiler's outcome table
	rules     int // and rule table
	gen       int
	median    time.Duration // of the applies since the snapshot before
}

var mapLine = regexp.MustCompile(`^map (\S+?)(_g\d+)? \((\d+) elements\)`)
var genLine = regexp.MustCompile(`\(generation (\d+)\)`)

func snap(t *testing.T, d *nft.Dataplane, s *compile.State, apply int) snapshot {
	var buf bytes.Buffer
	if err := d.Dump(&buf); err != nil {
		t.Fatal(err)
	}
	out := snapshot{apply: apply, elements: map[string]int{}, outcomes: len(s.Outcomes), rules: len(s.Rules)}
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		out.dumpLines++
		if m := mapLine.FindStringSubmatch(sc.Text()); m != nil {
			n, _ := strconv.Atoi(m[3])
			out.elements[m[1]] += n
		}
		if m := genLine.FindStringSubmatch(sc.Text()); m != nil {
			out.gen, _ = strconv.Atoi(m[1])
		}
	}
	return out
}

func (s snapshot) total() int {
	n := 0
	for _, v := range s.elements {
		n += v
	}
	return n
}

// TestChurn alternates the two sets BULKHEAD_CHURN_N times (10,000 with
// BULKHEAD_BENCH=1, else 200) and reports the apply times of the first
// and the last 1,000 (or tenth) and the table's size along the way. It
// fails if the table or the numbering grows, or if any switch writes a
// new generation.
func TestChurn(t *testing.T) {
	nstest.RequireRoot(t)
	n := 200
	if os.Getenv("BULKHEAD_BENCH") != "" {
		n = 10000
	}
	if v, err := strconv.Atoi(os.Getenv("BULKHEAD_CHURN_N")); err == nil && v >= 20 {
		n = v
	}
	window := min(1000, n/10)
	host := nstest.NS(t, "bhchh")
	var sets [2]*policy.Set
	for v := range sets {
		set, errs := load.Bytes("churn.yaml", []byte(workloads+policySet(v)))
		if len(errs) > 0 {
			t.Fatalf("load: %v", errs)
		}
		sets[v] = set
	}
	c, err := compile.New(sets[0], "h1", nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := nft.New(nft.Options{NetNS: host.Path()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s := c.State()
	if err := d.Apply(context.Background(), dataplane.Desired{State: s, Set: sets[0], Attachments: attachments}); err != nil {
		t.Fatal(err)
	}
	times := make([]time.Duration, 0, n)
	kernel := make([]time.Duration, 0, n) // of which nft Apply
	var snaps []snapshot
	for i := range n {
		v := 1 - i%2
		t0 := time.Now()
		if err := c.SetPolicies(sets[v]); err != nil {
			t.Fatal(err)
		}
		s = c.State()
		t1 := time.Now()
		if err := d.Apply(context.Background(), dataplane.Desired{State: s, Set: sets[v], Attachments: attachments}); err != nil {
			t.Fatalf("apply %d: %v", i+1, err)
		}
		times, kernel = append(times, time.Since(t0)), append(kernel, time.Since(t1))
		if (i+1)%window == 0 {
			sn := snap(t, d, s, i+1)
			sn.median = statsOf(times[len(times)-window:]).median
			snaps = append(snaps, sn)
		}
	}
	report(t, times, kernel, snaps, window)
	first, last := snaps[0], snaps[len(snaps)-1]
	if last.gen != 1 {
		t.Errorf("generation %d after %d switches: some switch wrote a new generation", last.gen, n)
	}
	// Both end on the same set (window is even): the same table.
	if fmt.Sprint(first.elements) != fmt.Sprint(last.elements) || first.outcomes != last.outcomes || first.rules != last.rules {
		t.Errorf("the table or the numbering grew: after %d switches %v (outcomes %d, rules %d), after %d %v (%d, %d)",
			first.apply, first.elements, first.outcomes, first.rules, last.apply, last.elements, last.outcomes, last.rules)
	}
}

type stats struct{ median, p90, max, mean time.Duration }

func statsOf(ds []time.Duration) stats {
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return stats{median: s[len(s)/2], p90: s[len(s)*9/10], max: s[len(s)-1], mean: sum / time.Duration(len(s))}
}

func report(t *testing.T, times, kernel []time.Duration, snaps []snapshot, window int) {
	f, l := statsOf(times[:window]), statsOf(times[len(times)-window:])
	fk, lk := statsOf(kernel[:window]), statsOf(kernel[len(kernel)-window:])
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
	var b strings.Builder
	fmt.Fprintf(&b, "\n%d switches; apply = SetPolicies + State + nft Apply\n\n", len(times))
	fmt.Fprintf(&b, "| applies | median | p90 | max | mean | nft Apply median | nft Apply p90 |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	fmt.Fprintf(&b, "| first %d | %s | %s | %s | %s | %s | %s |\n", window, ms(f.median), ms(f.p90), ms(f.max), ms(f.mean), ms(fk.median), ms(fk.p90))
	fmt.Fprintf(&b, "| last %d | %s | %s | %s | %s | %s | %s |\n", window, ms(l.median), ms(l.p90), ms(l.max), ms(l.mean), ms(lk.median), ms(lk.p90))
	fmt.Fprintf(&b, "| ratio last/first | %.2f | %.2f | | %.2f | %.2f | %.2f |\n\n", float64(l.median)/float64(f.median),
		float64(l.p90)/float64(f.p90), float64(l.mean)/float64(f.mean), float64(lk.median)/float64(fk.median), float64(lk.p90)/float64(fk.p90))
	fmt.Fprintf(&b, "| after apply | median apply since the row before | elements | outcomes, out_rule | ports | range4+range4b | rule_counts | dump lines | compiler outcome/rule table | generation |\n")
	fmt.Fprintf(&b, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, s := range snaps {
		e := s.elements
		fmt.Fprintf(&b, "| %d | %s | %d | %d, %d | %d | %d | %d | %d | %d / %d | %d |\n", s.apply, ms(s.median), s.total(), e["outcomes"], e["out_rule"],
			e["ports"], e["range4"]+e["range4b"], e["rule_counts"], s.dumpLines, s.outcomes, s.rules, s.gen)
	}
	t.Log(b.String())
}
