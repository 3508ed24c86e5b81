package manager

import (
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// The request rate of one key is bounded by a token bucket; other keys
// have their own.
func TestLimiterRate(t *testing.T) {
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	l := newLimiter(Limits{Rate: 10, Burst: 2}.withDefaults(), func() time.Time { return now })
	take := func(key string) error {
		release, err := l.acquire(key, false, slotRequest)
		if err == nil {
			release()
		}
		return err
	}
	for i := range 2 {
		if err := take("token:a"); err != nil {
			t.Fatalf("request %d of a burst of 2: %v", i, err)
		}
	}
	err := take("token:a")
	tm, ok := err.(*tooMany)
	if !ok || tm.retryAfter != 1 || fault.StatusOf(tm) != 429 {
		t.Fatalf("the third at once: %v", err)
	}
	if err := take("token:b"); err != nil {
		t.Fatalf("another token: %v", err)
	}
	now = now.Add(100 * time.Millisecond)
	if err := take("token:a"); err != nil {
		t.Fatalf("after a tenth of a second: %v", err)
	}
	if err := take("token:a"); err == nil {
		t.Fatal("a second request in the same tenth of a second")
	}
	if len(l.held) != 0 {
		t.Fatalf("slots held after every release: %v", l.held)
	}
}

// The routes the limits name are routes the manager serves.
func TestLimitsNameServedRoutes(t *testing.T) {
	served := map[string]bool{}
	for _, rt := range (&Manager{}).routeTable() {
		served[rt.method+" "+rt.path] = true
	}
	for r := range longRoutes {
		if !served[r] {
			t.Errorf("longRoutes names %s, which is not served", r)
		}
	}
	for r := range bulkRoutes {
		if !served[r] {
			t.Errorf("bulkRoutes names %s, which is not served", r)
		}
	}
}
