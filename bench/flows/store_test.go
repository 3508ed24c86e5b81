package flows

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/flows"
	"github.com/bulkhead-dev/bulkhead/internal/manager/flowstore"
)

// The flow store (internal/manager/flowstore): inserts per second in the
// collector's batches of 4,096, and one workload's last hour with many
// flows stored (BHFS_FLOWS, default 1,000,000, spread over 1,000
// workloads and the last 24 hours).

func storeBatch(seq uint64, n int, end time.Time, span time.Duration, workloads int) *flows.Batch {
	b := &flows.Batch{Stream: "bench", Seq: seq, Records: make([]flows.Record, n)}
	for i := range b.Records {
		t := end.Add(-span + time.Duration(i)*span/time.Duration(n))
		w := (int(seq)*n + i) % workloads
		b.Records[i] = flows.Record{Start: t.Add(-time.Second), End: t, Proto: 6, Verdict: flows.Allow,
			Rule: "Policy/app/db/ingress/web",
			Src:  flows.Endpoint{Addr: netip.AddrFrom4([4]byte{10, 1, byte(w >> 8), byte(w)}), Port: uint16(30000 + i%30000), Workload: "w" + strconv.Itoa(w), Namespace: "app", Identity: uint32(w + 2)},
			Dst:  flows.Endpoint{Addr: netip.AddrFrom4([4]byte{10, 2, 0, 1}), Port: 5432, Workload: "db", Namespace: "app", Identity: 1},
			Orig: flows.Count{Packets: 6, Bytes: 412}, Reply: flows.Count{Packets: 4, Bytes: 300},
			Source: flows.FromConntrack}
	}
	return b
}

func openBenchStore(b *testing.B) *flowstore.Store {
	s, err := flowstore.Open(flowstore.Config{Dir: b.TempDir(), MaxAge: 48 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkStoreInsert: one op is one flow; batches of 4,096, each
// written durably (fsync) before the next, as POST /v1/flows does.
func BenchmarkStoreInsert(b *testing.B) {
	s := openBenchStore(b)
	now := time.Now()
	const per = 4096
	// The batches are made beforehand, so that only the store is timed;
	// each covers the next 82 ms (4,096 flows at 50,000/s), as agents'
	// batches arrive: in time order, give or take a flush interval.
	const span = per * time.Second / 50000
	n := (b.N + per - 1) / per
	batches := make([]*flows.Batch, n)
	for i := range batches {
		batches[i] = storeBatch(uint64(i+1), per, now.Add(time.Duration(i+1)*span), span, 1000)
	}
	b.ResetTimer()
	for _, bt := range batches {
		if _, err := s.Add(context.Background(), "h1", bt); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
	b.ReportMetric(float64(s.DiskUsage())/float64(b.N)*1e6/(1<<20), "MiB/Mflows")
}

// BenchmarkWorkloadLastHour: one op is one query of one workload's last
// hour (about 1/1,000 of 1/24 of the flows stored).
func BenchmarkWorkloadLastHour(b *testing.B) {
	total := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("BHFS_FLOWS")); err == nil && v > 0 {
		total = v
	}
	s := openBenchStore(b)
	now := time.Now()
	const per = 4096
	n := (total + per - 1) / per
	start := time.Now()
	for i := range n {
		// Batch i covers its share of the last 24 hours, oldest first.
		end := now.Add(-24 * time.Hour).Add(time.Duration(i+1) * 24 * time.Hour / time.Duration(n))
		if _, err := s.Add(context.Background(), "h1", storeBatch(uint64(i+1), per, end, 24*time.Hour/time.Duration(n), 1000)); err != nil {
			b.Fatal(err)
		}
	}
	fill := time.Since(start)
	b.ResetTimer()
	var got int
	for i := range b.N {
		fs, _, err := s.Query(context.Background(), flowstore.Query{Workload: "w" + strconv.Itoa(i%1000), Since: now.Add(-time.Hour), Limit: flowstore.MaxLimit})
		if err != nil {
			b.Fatal(err)
		}
		got = len(fs)
	}
	b.StopTimer()
	b.ReportMetric(float64(got), "flows/query")
	b.ReportMetric(float64(n*per)/fill.Seconds(), "fill-flows/s")
	b.ReportMetric(float64(s.DiskUsage())/float64(n*per)*1e6/(1<<20), "MiB/Mflows")
	fmt.Fprintf(os.Stderr, "stored %d flows in %s; %d bytes\n", n*per, fill.Round(time.Millisecond), s.DiskUsage())
}
