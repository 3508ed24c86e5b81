package flows

import (
	"context"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
)

type fakeCounters struct{ packets uint64 }

func (f *fakeCounters) Counters(context.Context) (dataplane.Counters, error) {
	return dataplane.Counters{Rules: map[string]dataplane.Counter{"r": {Packets: f.packets}}}, nil
}

// A record still on its way from the kernel when the counters are read is
// not reported as suppressed: the kernel counted 100 packets, 20 were
// logged, of which 10 had arrived at the first reading; 80 were suppressed,
// and that is what is reported, one reading late.
func TestSuppressedNeverCountsRecordsInFlight(t *testing.T) {
	fc := &fakeCounters{packets: 100}
	c := &Collector{cfg: Config{Counters: fc}}
	a := &assembler{seen: map[string]uint64{}, reported: map[string]uint64{}}
	key := suppressKey(Hit{Kind: Deny, ID: "r"})
	var total uint64
	for i, seen := range []uint64{10, 20, 20} {
		a.seen[key] = seen
		cs, _ := fc.Counters(context.Background())
		c.onReading(a, cs)
		total += a.supp[key]
		a.supp = nil
		if total > 80 {
			t.Fatalf("reading %d: %d suppressed reported, more than the 80 there were", i, total)
		}
	}
	if total != 80 {
		t.Fatalf("%d suppressed reported, want 80", total)
	}
}
