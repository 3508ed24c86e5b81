package auditlog

import (
	"context"
	"sync"
	"time"
)

// Refusals of authentication and authorization are audited, so that an
// auditor sees who tried what and from where, but at a bounded rate: a
// flood of refused requests must not fill the store. Up to refusalBurst
// are written at once, then one per refusalEvery; the rest are counted,
// and the count is written with the next refusal audited (detail
// "suppressedBefore") or, if none comes, by RefusalLoop in an entry of its
// own ("auth.refused.suppressed"). Nothing is lost silently: every refusal
// is either an entry or in a count. What a refusal records (who, from
// where, why) is the HTTP edge's to say: it calls TakeRefusal, then
// Commit.
const (
	refusalBurst = 20
	refusalEvery = 5 * time.Second
)

type refusals struct {
	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed uint64
}

// TakeRefusal reports whether a refusal at now may be audited; if so it
// also returns, and clears, the count of refusals suppressed before it,
// which the entry records. A refusal that may not is counted.
func (l *Log) TakeRefusal(now time.Time) (bool, uint64) { return l.refusals.take(now) }

// GiveBackRefusals restores a count TakeRefusal cleared (and the refusal
// itself) when its entry was not written.
func (l *Log) GiveBackRefusals(n uint64) { l.refusals.giveBack(n) }

func (r *refusals) take(now time.Time) (bool, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last.IsZero() {
		r.tokens = refusalBurst
	} else if d := now.Sub(r.last); d > 0 {
		r.tokens = min(refusalBurst, r.tokens+float64(d)/float64(refusalEvery))
	}
	r.last = now
	if r.tokens < 1 {
		r.suppressed++
		return false, 0
	}
	r.tokens--
	n := r.suppressed
	r.suppressed = 0
	return true, n
}

func (r *refusals) giveBack(n uint64) {
	r.mu.Lock()
	r.suppressed += n
	r.mu.Unlock()
}

// RefusalLoop writes the count of suppressed refusals that no later
// audited refusal carried, once the rate allows, until ctx is done.
func (l *Log) RefusalLoop(ctx context.Context) {
	t := time.NewTicker(refusalEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.refusals.mu.Lock()
		pending := l.refusals.suppressed
		l.refusals.mu.Unlock()
		if pending == 0 {
			continue
		}
		ok, n := l.refusals.take(l.cfg.Now())
		if !ok || n == 0 {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, _, err := l.Commit(wctx, nil, nil, Entry{Actor: System, Action: "auth.refused.suppressed", Object: "requests",
			Detail: map[string]any{"suppressed": n}})
		cancel()
		if err != nil {
			l.refusals.giveBack(n)
		}
	}
}
