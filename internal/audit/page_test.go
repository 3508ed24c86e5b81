package audit

import (
	"fmt"
	"testing"
)

// The prefixes cover exactly the range asked for.
func TestSeqPrefixes(t *testing.T) {
	for _, c := range [][2]uint64{{1, 1}, {1, 9}, {1, 10}, {1, 1001}, {7, 12345}, {100, 199}, {999, 1000}, {0, 0}, {18446744073709551000, 18446744073709551615}} {
		ps := seqPrefixes(c[0], c[1])
		if len(ps) > 18*20 {
			t.Fatalf("%v: %d prefixes", c, len(ps))
		}
		covered := func(n uint64) bool {
			key := fmt.Sprintf("%020d", n)
			for _, p := range ps {
				if key[:len(p)] == p {
					return true
				}
			}
			return false
		}
		for _, n := range []uint64{c[0], c[1], c[0] + (c[1]-c[0])/2} {
			if !covered(n) {
				t.Errorf("%v: %d is not covered by %v", c, n, ps)
			}
		}
		if c[0] > 0 && covered(c[0]-1) || c[1] < ^uint64(0) && covered(c[1]+1) {
			t.Errorf("%v: %v covers more", c, ps)
		}
	}
	if got := len(seqPrefixes(1, 1000)); got != 28 {
		t.Errorf("1..1000: %d prefixes, want 28", got)
	}
}

func TestReadRange(t *testing.T) {
	s, _ := openStore(t)
	all := writeLog(t, s, 123)
	for _, c := range [][2]int{{1, 1}, {1, 123}, {5, 10}, {100, 50}, {124, 5}, {0, 3}} {
		got, err := ReadRange(t.Context(), s, uint64(c[0]), c[1])
		if err != nil {
			t.Fatal(err)
		}
		from := max(c[0], 1)
		want := all[min(from-1, len(all)):min(from-1+c[1], len(all))]
		if len(got) != len(want) {
			t.Fatalf("%v: %d entries, want %d", c, len(got), len(want))
		}
		for i := range got {
			if got[i].Hash != want[i].Hash || got[i].Revision != want[i].Revision {
				t.Fatalf("%v: entry %d: %+v, want %+v", c, i, got[i], want[i])
			}
		}
	}
}
