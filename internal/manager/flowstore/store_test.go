package flowstore_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/flows"
	"github.com/bulkhead-dev/bulkhead/internal/manager/flowstore"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

func open(t testing.TB, c *clock, cfg flowstore.Config) *flowstore.Store {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	cfg.Now = c.Now
	s, err := flowstore.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func record(src, dst string, end time.Time, port uint16, verdict flows.Verdict, rule string) flows.Record {
	return flows.Record{Start: end.Add(-time.Second), End: end, Proto: 6, Verdict: verdict, Rule: rule,
		Src:    flows.Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Port: 40000, Workload: src, Namespace: "app"},
		Dst:    flows.Endpoint{Addr: netip.MustParseAddr("10.0.0.2"), Port: port, Workload: dst, Namespace: "app"},
		Source: flows.FromConntrack}
}

func add(t testing.TB, s *flowstore.Store, host string, b *flows.Batch) bool {
	t.Helper()
	ok, err := s.Add(context.Background(), host, b)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestQueryReturnsNewestInTimeOrder(t *testing.T) {
	c := &clock{now: t0}
	s := open(t, c, flowstore.Config{})
	// Stored out of time order: the store orders by end time.
	var recs []flows.Record
	for _, m := range []int{5, 1, 4, 2, 3} {
		recs = append(recs, record("web", "db", t0.Add(-time.Duration(m)*time.Minute), 5432, flows.Allow, "r1"))
	}
	add(t, s, "h1", &flows.Batch{Stream: "s", Seq: 1, Records: recs})
	got, trunc, err := s.Query(context.Background(), flowstore.Query{Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !trunc || len(got) != 3 {
		t.Fatalf("got %d flows, truncated %v; want the newest 3 of 5, truncated", len(got), trunc)
	}
	for i, want := range []int{3, 2, 1} {
		if end := got[i].End; !end.Equal(t0.Add(-time.Duration(want) * time.Minute)) {
			t.Errorf("flow %d ends %v, want t0-%dm", i, end, want)
		}
		if got[i].Host != "h1" {
			t.Errorf("flow %d host %q, want h1", i, got[i].Host)
		}
	}
}

func TestWorkloadOverTimeRange(t *testing.T) {
	c := &clock{now: t0}
	s := open(t, c, flowstore.Config{})
	var recs []flows.Record
	// Three hours of flows of web→db and of other→db, one a minute.
	for m := range 180 {
		end := t0.Add(-time.Duration(m) * time.Minute)
		recs = append(recs, record("web", "db", end, 5432, flows.Allow, "a"))
		recs = append(recs, record("other", "cache", end, 6379, flows.Deny, "d"))
	}
	add(t, s, "h1", &flows.Batch{Stream: "s", Seq: 1, Records: recs})
	q := flowstore.Query{Workload: "web", Since: t0.Add(-90 * time.Minute), Until: t0.Add(-30 * time.Minute), Limit: 1000}
	got, _, err := s.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 60 {
		t.Fatalf("got %d flows of web in [-90m, -30m), want 60", len(got))
	}
	for i, f := range got {
		if f.Src.Workload != "web" || f.End.Before(q.Since) || !f.End.Before(q.Until) {
			t.Fatalf("flow %d: %s→%s at %v, outside the query", i, f.Src.Workload, f.Dst.Workload, f.End)
		}
		if i > 0 && f.End.Before(got[i-1].End) {
			t.Fatalf("flow %d ends before flow %d", i, i-1)
		}
	}
	// The destination's workload finds it too; filters combine.
	got, _, _ = s.Query(context.Background(), flowstore.Query{Workload: "cache", Verdict: flows.Deny, Port: 6379, Rule: "d"})
	if len(got) != 180 {
		t.Errorf("cache's denied flows: %d, want 180", len(got))
	}
	got, _, _ = s.Query(context.Background(), flowstore.Query{Namespace: "app", Verdict: flows.Allow, Limit: 10000})
	if len(got) != 180 {
		t.Errorf("namespace app's allowed flows: %d, want 180", len(got))
	}
}

func TestRedeliveredBatchCountsOnce(t *testing.T) {
	c := &clock{now: t0}
	dir := t.TempDir()
	s := open(t, c, flowstore.Config{Dir: dir})
	b := &flows.Batch{Stream: "s", Seq: 7, Records: []flows.Record{record("web", "db", t0, 80, flows.Allow, "r")},
		Lost: map[flows.Cause]uint64{flows.LostNFLOGGap: 3}, Suppressed: map[string]uint64{"deny r2": 5}}
	if !add(t, s, "h1", b) {
		t.Fatal("first delivery not added")
	}
	if add(t, s, "h1", b) {
		t.Fatal("redelivery added")
	}
	if add(t, s, "h1", &flows.Batch{Stream: "s", Seq: 6}) {
		t.Fatal("an older seq of the stream added")
	}
	// Another host's stream of the same name is its own.
	if !add(t, s, "h2", b) {
		t.Fatal("h2's batch refused as h1's duplicate")
	}
	s.Close()
	s = open(t, c, flowstore.Config{Dir: dir}) // across a restart
	if add(t, s, "h1", b) {
		t.Fatal("redelivery after a restart added")
	}
	n := s.Counts()
	if n.Stored != 2 || n.Batches != 2 || n.Duplicates != 3 {
		t.Errorf("stored %d batches %d duplicates %d, want 2 2 3", n.Stored, n.Batches, n.Duplicates)
	}
	if n.Lost["h1"][flows.LostNFLOGGap] != 3 || n.Suppressed["h1"]["deny r2"] != 5 || n.Lost["h2"][flows.LostNFLOGGap] != 3 {
		t.Errorf("lost %v suppressed %v, want 3 nflog-gap and 5 suppressed per host", n.Lost, n.Suppressed)
	}
	if n.Rules["r"].Flows != 2 || n.Rules["r2"].Suppressed != 10 {
		t.Errorf("rule hits %v, want r: 2 flows, r2: 10 suppressed", n.Rules)
	}
	got, _, _ := s.Query(context.Background(), flowstore.Query{})
	if len(got) != 2 {
		t.Errorf("%d flows stored, want 2", len(got))
	}
}

func TestRetentionByAgeDropsOldestAndCounts(t *testing.T) {
	c := &clock{now: t0}
	s := open(t, c, flowstore.Config{MaxAge: 2 * time.Hour})
	var recs []flows.Record
	for m := range 240 { // four hours, one a minute
		recs = append(recs, record("web", "db", t0.Add(-time.Duration(m)*time.Minute), 80, flows.Allow, "r"))
	}
	add(t, s, "h1", &flows.Batch{Stream: "s", Seq: 1, Records: recs})
	expired, evicted, err := s.Retain(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The flows of minutes 121 to 239 are older than 2 h; minute 120 is
	// exactly at the cut and kept.
	if expired != 119 || evicted != 0 {
		t.Fatalf("expired %d evicted %d, want 119 0", expired, evicted)
	}
	got, _, _ := s.Query(context.Background(), flowstore.Query{Workload: "web", Since: t0.Add(-10 * time.Hour), Limit: 1000})
	if len(got) != 121 {
		t.Fatalf("%d flows left, want 121", len(got))
	}
	if got[0].End.Before(t0.Add(-2 * time.Hour)) {
		t.Errorf("oldest left ends %v, older than the cut", got[0].End)
	}
	if n := s.Counts(); n.Expired != 119 {
		t.Errorf("counts expired %d, want 119", n.Expired)
	}
}

func TestRetentionBySizeDropsOldestFirst(t *testing.T) {
	c := &clock{now: t0}
	const maxBytes = 2 << 20
	s := open(t, c, flowstore.Config{MaxBytes: maxBytes})
	seq := uint64(0)
	for batch := range 40 { // well over 2 MiB of flows, oldest first
		var recs []flows.Record
		for i := range 1000 {
			end := t0.Add(-time.Hour).Add(time.Duration(batch*1000+i) * time.Millisecond * 50)
			recs = append(recs, record(fmt.Sprintf("w%d", i%50), "db", end, 80, flows.Allow, "r"))
		}
		seq++
		add(t, s, "h1", &flows.Batch{Stream: "s", Seq: seq, Records: recs})
	}
	before := s.DiskUsage()
	_, evicted, err := s.Retain(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if before <= maxBytes {
		t.Fatalf("the test wrote only %d bytes, not over %d", before, maxBytes)
	}
	if evicted == 0 || s.Counts().Evicted != evicted {
		t.Fatalf("evicted %d (counted %d) from %d bytes, want some", evicted, s.Counts().Evicted, before)
	}
	if use := s.DiskUsage(); use > maxBytes {
		t.Errorf("%d bytes after retention, want at most %d", use, maxBytes)
	}
	got, _, _ := s.Query(context.Background(), flowstore.Query{Limit: flowstore.MaxLimit})
	newest := t0.Add(-time.Hour).Add(39999 * 50 * time.Millisecond)
	if len(got) == 0 || !got[len(got)-1].End.Equal(newest) {
		t.Fatalf("the newest flow is gone")
	}
	all, _, _ := s.Query(context.Background(), flowstore.Query{Limit: flowstore.MaxLimit, Since: t0.Add(-2 * time.Hour), Until: got[0].End})
	if uint64(len(all))+evicted > 40000 {
		t.Errorf("older flows kept: %d before the oldest returned, with %d evicted", len(all), evicted)
	}
}

func TestFollowSeesNewFlows(t *testing.T) {
	c := &clock{now: t0}
	s := open(t, c, flowstore.Config{})
	ch, stop := s.Follow()
	defer stop()
	add(t, s, "h1", &flows.Batch{Stream: "s", Seq: 1, Records: []flows.Record{record("web", "db", t0, 80, flows.Allow, "r")}})
	select {
	case fs := <-ch:
		if len(fs) != 1 || fs[0].Src.Workload != "web" {
			t.Fatalf("followed %v", fs)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no flows followed")
	}
}
