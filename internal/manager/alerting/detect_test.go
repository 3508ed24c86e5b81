package alerting

import (
	"net/netip"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/flows"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

func rec(at time.Time, srcNS, src, dstNS string, port uint16, v flows.Verdict) *flows.Record {
	return &flows.Record{Start: at, End: at, Proto: 6, Verdict: v,
		Src: flows.Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Namespace: srcNS, Workload: src},
		Dst: flows.Endpoint{Addr: netip.MustParseAddr("10.0.0.2"), Port: port, Namespace: dstNS, Workload: "db"}}
}

func kinds(as []Alert) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.Kind)
	}
	return out
}

func TestScanRaisesOnePerWindow(t *testing.T) {
	d := New(Config{ScanDistinct: 10}, t0)
	var got []Alert
	for p := range 30 {
		got = append(got, d.Observe(rec(t0.Add(time.Duration(p)*time.Second), "a", "web", "a", uint16(1000+p), flows.Deny))...)
	}
	if len(got) != 1 || got[0].Kind != Scan || got[0].Count != 10 || got[0].Workload != "a/web" || len(got[0].Examples) != examples {
		t.Fatalf("alerts: %+v; want one scan of 10 by a/web", got)
	}
	// The same port again and again is no scan; nor are allowed flows.
	d = New(Config{ScanDistinct: 10}, t0)
	for i := range 30 {
		if as := d.Observe(rec(t0.Add(time.Duration(i)*time.Second), "a", "web", "a", 80, flows.Deny)); len(as) > 0 {
			t.Fatalf("one port: %v", kinds(as))
		}
	}
}

func TestNewEdgeAfterLearning(t *testing.T) {
	d := New(Config{}, t0)
	edges := func(r *flows.Record) (out []Alert) {
		for _, a := range d.Observe(r) {
			if a.Kind == NewEdge {
				out = append(out, a)
			}
		}
		return out
	}
	if as := edges(rec(t0.Add(time.Minute), "a", "web", "b", 80, flows.Allow)); len(as) != 0 {
		t.Fatalf("learning period: %v", kinds(as))
	}
	later := t0.Add(2 * time.Hour)
	if as := edges(rec(later, "a", "web", "b", 80, flows.Allow)); len(as) != 0 {
		t.Fatalf("a learnt edge: %v", kinds(as))
	}
	as := edges(rec(later, "a", "web", "c", 80, flows.Allow))
	if len(as) != 1 || as[0].Workload != "a/web" {
		t.Fatalf("new edge a -> c: %+v", as)
	}
	if as := edges(rec(later.Add(time.Second), "a", "web", "c", 80, flows.Allow)); len(as) != 0 {
		t.Fatalf("the same edge again: %v", kinds(as))
	}
}

func TestNewHourAfterWorkloadLearnt(t *testing.T) {
	d := New(Config{}, t0)
	for h := range 3 { // 10:00 to 12:00 learnt
		d.Observe(rec(t0.Add(time.Duration(h)*time.Hour), "a", "web", "a", 80, flows.Allow))
	}
	if as := d.Observe(rec(t0.Add(24*time.Hour+time.Hour), "a", "web", "a", 80, flows.Allow)); len(as) != 0 {
		t.Fatalf("a used hour: %v", kinds(as))
	}
	as := d.Observe(rec(t0.Add(16*time.Hour), "a", "web", "a", 80, flows.Allow)) // 02:00
	if len(as) != 1 || as[0].Kind != NewHour {
		t.Fatalf("02:00: %+v", as)
	}
}

func TestDenyRiseAgainstBaseline(t *testing.T) {
	d := New(Config{RiseMin: 20, ScanDistinct: 1000}, t0)
	at := t0
	for w := range 5 { // 2 denials a minute
		for i := range 2 {
			d.Observe(rec(at.Add(time.Duration(w)*time.Minute+time.Duration(i)*time.Second), "a", "web", "a", 80, flows.Deny))
		}
	}
	var got []Alert
	for i := range 40 {
		got = append(got, d.Observe(rec(at.Add(6*time.Minute+time.Duration(i)*time.Second), "a", "web", "a", uint16(80+i), flows.Deny))...)
	}
	if len(got) != 1 || got[0].Kind != DenyRise || got[0].Count != 21 || got[0].Baseline != 2 {
		t.Fatalf("alerts: %+v; want one deny-rise at 21 over a baseline of 2", got)
	}
}

func TestBoundedAndCounted(t *testing.T) {
	d := New(Config{MaxWorkloads: 10, MaxEdges: 5}, t0)
	for i := range 100 {
		d.Observe(rec(t0.Add(time.Duration(i)*time.Second), "a", string(rune('A'+i)), "n"+string(rune('A'+i)), 80, flows.Allow))
	}
	if len(d.wls) != 10 || len(d.edges) != 5 {
		t.Fatalf("state: %d workloads, %d edges; want 10, 5", len(d.wls), len(d.edges))
	}
	if got := d.Dropped(); got.Workloads != 90 || got.Edges != 95 {
		t.Fatalf("dropped: %+v; want 90 workloads, 95 edges", got)
	}
}

func TestStableID(t *testing.T) {
	a := New(Config{ScanDistinct: 3}, t0)
	b := New(Config{ScanDistinct: 3}, t0)
	var ia, ib []Alert
	for p := range 3 {
		ia = append(ia, a.Observe(rec(t0.Add(time.Duration(p)*time.Second), "a", "web", "a", uint16(p+1), flows.Deny))...)
		ib = append(ib, b.Observe(rec(t0.Add(time.Duration(p)*time.Second), "a", "web", "a", uint16(p+1), flows.Deny))...)
	}
	if len(ia) != 1 || len(ib) != 1 || ia[0].ID != ib[0].ID {
		t.Fatalf("ids: %+v %+v", ia, ib)
	}
}
