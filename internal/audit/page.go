package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// ReadRange returns the entries with seq from to from+n-1 that s holds,
// in seq order, with Revision set. It lists only the keys of that range
// (a few prefixes of their zero-padded seqs), so it costs the same however
// long the log is.
func ReadRange(ctx context.Context, s store.Store, from uint64, n int) ([]Entry, error) {
	if from == 0 {
		from = 1
	}
	if n <= 0 {
		return nil, nil
	}
	last := from + uint64(n) - 1
	if last < from { // overflow
		last = ^uint64(0)
	}
	var out []Entry
	for _, p := range seqPrefixes(from, last) {
		kvs, _, err := s.List(ctx, entriesKey+p)
		if err != nil {
			return nil, fmt.Errorf("audit: read from %d: %w", from, err)
		}
		for _, kv := range kvs {
			var e Entry
			if err := json.Unmarshal(kv.Value, &e); err != nil {
				return nil, fmt.Errorf("audit: read %s: %w", kv.Key, err)
			}
			e.Revision = kv.ModRev
			out = append(out, e)
		}
	}
	return out, nil
}

// seqPrefixes covers the seqs a to b (inclusive), as entryKey writes them
// (20 digits), with the fewest prefixes of whole decimal blocks: at most
// 18 per digit of b-a.
func seqPrefixes(a, b uint64) []string {
	const digits = 20
	var out []string
	for a <= b {
		// The largest block of 10^k seqs that starts at a and ends by b.
		k, size := 0, uint64(1)
		for k < digits-1 && a%(size*10) == 0 && size*10-1 <= b-a {
			k, size = k+1, size*10
		}
		key := fmt.Sprintf("%020d", a)
		out = append(out, strings.Clone(key[:digits-k]))
		if b-a < size || a+size < a {
			break
		}
		a += size
	}
	return out
}
