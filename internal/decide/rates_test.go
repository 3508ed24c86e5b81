package decide_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/decide"
)

func TestRatesWindows(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	r := decide.NewRates(0)
	// One escalation a second for ten minutes.
	for i := range 600 {
		r.Record("shop/web-0", t0.Add(time.Duration(i)*time.Second))
	}
	now := t0.Add(599 * time.Second)
	tests := []struct {
		window   time.Duration
		min, max int64 // a count covers the window and at most one bucket more
	}{
		{time.Second, 1, 2},
		{10 * time.Second, 10, 11},
		{time.Minute, 60, 61},
		{5 * time.Minute, 300, 360},
		{time.Hour, 600, 600},
		{2 * time.Hour, 600, 600}, // clamped to the hour
	}
	for _, tc := range tests {
		if n := r.Count("shop/web-0", now, tc.window); n < tc.min || n > tc.max {
			t.Errorf("Count(%s) = %d, want %d-%d", tc.window, n, tc.min, tc.max)
		}
	}
	if n := r.Count("shop/web-0", now.Add(2*time.Minute), time.Minute); n != 0 {
		t.Errorf("a minute after two minutes of quiet: %d, want 0", n)
	}
	if n := r.Count("shop/web-0", now.Add(2*time.Hour), time.Hour); n != 0 {
		t.Errorf("an hour after two hours of quiet: %d, want 0", n)
	}
	if n := r.Count("shop/db-0", now, time.Hour); n != 0 {
		t.Errorf("a source never seen: %d", n)
	}
	// A clock that steps back counts into the latest second.
	r.Record("shop/web-0", t0)
	if n := r.Count("shop/web-0", now, time.Second); n != 3 {
		t.Errorf("after a record in the past: %d in the last second, want 3", n)
	}
	// Quiet for longer than the rings, then busy again: nothing old leaks.
	later := now.Add(3 * time.Hour)
	r.Record("shop/web-0", later)
	if n := r.Count("shop/web-0", later, time.Hour); n != 1 {
		t.Errorf("after three quiet hours: %d in the hour, want 1", n)
	}
}

// A request without a time (the zero time) is counted, not a panic.
func TestRatesZeroTime(t *testing.T) {
	r := decide.NewRates(0)
	r.Record("a", time.Time{})
	r.Record("a", time.Time{})
	if n := r.Count("a", time.Time{}, time.Minute); n != 2 {
		t.Errorf("Count = %d, want 2", n)
	}
}

// Memory is bounded: beyond its bound the tracker forgets the source seen
// longest ago, and counts that it did.
func TestRatesBounded(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	r := decide.NewRates(100)
	for i := range 1000 {
		r.Record(fmt.Sprintf("ns/w-%d", i), t0.Add(time.Duration(i)*time.Millisecond))
	}
	r.Record("ns/w-999", t0.Add(time.Second))
	if r.Len() != 100 || r.Evicted() != 900 {
		t.Errorf("Len %d, Evicted %d; want 100, 900", r.Len(), r.Evicted())
	}
	if n := r.Count("ns/w-0", t0.Add(time.Second), time.Minute); n != 0 {
		t.Errorf("the source seen longest ago is still kept: %d", n)
	}
	if n := r.Count("ns/w-999", t0.Add(time.Second), time.Minute); n != 2 {
		t.Errorf("the source seen last: %d, want 2", n)
	}
}
