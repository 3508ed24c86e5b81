package decide

import (
	"container/list"
	"sync"
	"time"
)

// DefaultMaxSources bounds the sources a Rates tracker keeps.
const DefaultMaxSources = 100_000

// Rates counts new escalations per source in sliding windows up to
// MaxRateWindow, in fixed memory per source (about 600 bytes): per-second
// counts for the last minute and per-minute counts for the last hour. A
// count covers at least the window asked and at most one bucket more
// (a second up to a minute, a minute above), so that it errs towards
// more escalations, the cautious side for a limit. At most maxSources are
// kept; beyond that the source seen longest ago is forgotten (counted by
// Evicted). A source idle for an hour has nothing left to count and is
// dropped first. Rates is safe for concurrent use.
type Rates struct {
	mu      sync.Mutex
	max     int
	sources map[string]*list.Element // of *window
	lru     list.List                // front: seen last
	evicted uint64
}

const (
	secBuckets = 64 // ≥ 61: a minute plus the bucket the window starts in
	minBuckets = 64 // ≥ 61: an hour plus the bucket the window starts in
)

type window struct {
	key     string
	lastSec int64 // unix second of the last record
	sec     [secBuckets]uint32
	min     [minBuckets]uint32
}

// NewRates returns a tracker of at most maxSources sources (≤ 0:
// DefaultMaxSources).
func NewRates(maxSources int) *Rates {
	if maxSources <= 0 {
		maxSources = DefaultMaxSources
	}
	return &Rates{max: maxSources, sources: map[string]*list.Element{}}
}

// Record counts one escalation of key at t.
func (r *Rates) Record(key string, t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	el, ok := r.sources[key]
	if !ok {
		if r.lru.Len() >= r.max {
			old := r.lru.Back()
			delete(r.sources, old.Value.(*window).key)
			r.lru.Remove(old)
			r.evicted++
		}
		el = r.lru.PushFront(&window{key: key, lastSec: unixSec(t)})
		r.sources[key] = el
	} else {
		r.lru.MoveToFront(el)
	}
	w := el.Value.(*window)
	s := w.advance(unixSec(t))
	w.sec[s%secBuckets]++
	w.min[(s/60)%minBuckets]++
}

// advance moves w to second s, clearing the buckets that fall out of
// both windows; a time before the last record counts as the last record.
func (w *window) advance(s int64) int64 {
	if s <= w.lastSec {
		return w.lastSec
	}
	for i, n := w.lastSec+1, int64(0); i <= s && n < secBuckets; i, n = i+1, n+1 {
		w.sec[i%secBuckets] = 0
	}
	for i, n := w.lastSec/60+1, int64(0); i <= s/60 && n < minBuckets; i, n = i+1, n+1 {
		w.min[i%minBuckets] = 0
	}
	w.lastSec = s
	return s
}

// Count is the number of escalations of key in the window d up to t
// (clamped to 1s…MaxRateWindow), as the type's doc bounds it.
func (r *Rates) Count(key string, t time.Time, d time.Duration) int64 {
	d = min(max(d, time.Second), MaxRateWindow)
	r.mu.Lock()
	defer r.mu.Unlock()
	el, ok := r.sources[key]
	if !ok {
		return 0
	}
	w := el.Value.(*window)
	now := max(unixSec(t), w.lastSec)
	var n int64
	if d <= time.Minute {
		k := int64((d + time.Second - 1) / time.Second)
		for s := max(now-k, 0); s <= now; s++ {
			if s <= w.lastSec && w.lastSec-s < secBuckets {
				n += int64(w.sec[s%secBuckets])
			}
		}
		return n
	}
	k := int64((d + time.Minute - 1) / time.Minute)
	for m := max(now/60-k, 0); m <= now/60; m++ {
		if m <= w.lastSec/60 && w.lastSec/60-m < minBuckets {
			n += int64(w.min[m%minBuckets])
		}
	}
	return n
}

// unixSec is t in unix seconds, a time before 1970 (a zero time) as 0:
// bucket indexes are never negative.
func unixSec(t time.Time) int64 { return max(t.Unix(), 0) }

// Len is the number of sources kept.
func (r *Rates) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lru.Len()
}

// Evicted is the number of sources forgotten to stay within the bound.
func (r *Rates) Evicted() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.evicted
}
