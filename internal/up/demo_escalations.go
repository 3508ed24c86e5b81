package up

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
)

// heldNotice is how long an escalated demo connection waits before the
// demo says it is held, and how long it looks for its record.
const (
	heldNotice  = 1500 * time.Millisecond
	heldLookFor = 3 * time.Second
)

// noticeHeld prints, once, that the connection from → to:port is held
// for an operator, with the command that answers it, if it still waits
// after heldNotice. stop ends the watch.
func (d *demoFloor) noticeHeld(ctx context.Context, from, to *runningWorkload, port int) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		select {
		case <-ctx.Done():
			return
		case <-time.After(heldNotice):
		}
		for end := time.Now().Add(heldLookFor); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
			e, ok := d.escalation(ctx, api.EscalationHeld, from.addr, to.addr, port, start)
			if ctx.Err() != nil {
				return
			}
			if ok {
				d.printf("%s  %-8s %-27s → %-30s waiting for an operator: bulkhead escalations approve %s (or deny); %s at %s\n",
					time.Now().Format("15:04:05"), "held", from.key(), fmt.Sprintf("%s:%d", to.key(), port), e.ID, e.OnTimeout,
					e.Deadline.Local().Format("15:04:05"))
				return
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// cancelWhenDenied calls cancel once the manager has denied the newest
// escalation of from → to:port since since, or when ctx ends.
func (d *demoFloor) cancelWhenDenied(ctx context.Context, cancel context.CancelFunc, from, to *runningWorkload, port int, since time.Time) {
	for ctx.Err() == nil {
		if e, ok := d.escalation(ctx, api.EscalationDecided, from.addr, to.addr, port, since); ok && e.Verdict == api.VerdictDeny {
			cancel()
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// decision says how the manager decided the newest escalation of
// from → to:port since since ("" when it has none).
func (d *demoFloor) decision(ctx context.Context, from, to *runningWorkload, port int, since time.Time) string {
	e, ok := d.escalation(ctx, api.EscalationDecided, from.addr, to.addr, port, since)
	if !ok {
		return ""
	}
	took := fmt.Sprintf("%.1f ms", e.TookMs)
	if e.TookMs >= 1000 {
		took = fmt.Sprintf("%.1f s", e.TookMs/1000)
	}
	return fmt.Sprintf("%s %s: %s, in %s", e.ID, e.Outcome, e.Reason, took)
}

// escalation finds the newest escalation in state of from → to:port
// asked since since.
func (d *demoFloor) escalation(ctx context.Context, state string, from, to netip.Addr, port int, since time.Time) (api.Escalation, bool) {
	list, err := d.u.admin.Escalations(ctx, state)
	if err != nil {
		return api.Escalation{}, false
	}
	for _, e := range list.Items { // the newest first
		if e.Source.Address == from.String() && e.Destination.Address == to.String() && e.Port == port &&
			!e.Asked.Before(since.Add(-time.Second)) {
			return e, true
		}
	}
	return api.Escalation{}, false
}
