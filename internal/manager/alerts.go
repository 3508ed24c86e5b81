package manager

import (
	"context"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
)

// Alerts are what the manager found wrong with its own store or its
// clients that a person must look at: a blob that no longer matches its
// name, an access record without a valid seal. Each is logged at error
// level at once, kept in memory (GET /v1/alerts), and written to the audit
// log by alertLoop. The same alert (kind and object) is raised once; a
// repeat only counts, so that a store with many tampered records, or a
// client that keeps asking for one, cannot flood the log.
const (
	alertsKept  = 256 // distinct alerts in memory
	alertsQueue = 64  // alerts waiting for their audit entry
)

type alerts struct {
	mu      sync.Mutex
	items   map[string]*api.Alert // kind + " " + object
	queue   chan api.Alert
	dropped int // audit entries not written because the queue was full
}

func newAlerts() *alerts {
	return &alerts{items: map[string]*api.Alert{}, queue: make(chan api.Alert, alertsQueue)}
}

// raise records an alert. It never blocks: the audit entry is written by
// alertLoop.
func (m *Manager) raise(kind, object, message string) {
	a := m.alerts
	a.mu.Lock()
	defer a.mu.Unlock()
	id := kind + " " + object
	if cur := a.items[id]; cur != nil {
		cur.Count++
		cur.Last = m.now().UTC()
		return
	}
	m.log.Error("alert", "kind", kind, "object", object, "msg", message)
	if len(a.items) >= alertsKept {
		a.evictOldest()
	}
	now := m.now().UTC()
	al := &api.Alert{Kind: kind, Object: object, Message: message, First: now, Last: now, Count: 1}
	a.items[id] = al
	select {
	case a.queue <- *al:
	default:
		a.dropped++
	}
}

// evictOldest forgets the alert seen longest ago; mu is held.
func (a *alerts) evictOldest() {
	var oldest string
	var t time.Time
	for id, al := range a.items {
		if oldest == "" || al.Last.Before(t) {
			oldest, t = id, al.Last
		}
	}
	delete(a.items, oldest)
}

// alertLoop writes the audit entry of every alert raised.
func (m *Manager) alertLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case al := <-m.alerts.queue:
			m.alerts.mu.Lock()
			dropped := m.alerts.dropped
			m.alerts.dropped = 0
			m.alerts.mu.Unlock()
			detail := map[string]any{"message": al.Message}
			if dropped > 0 {
				detail["alertsNotAudited"] = dropped
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, _, err := m.commitAudited(wctx, nil, nil, auditEntry{actor: system, action: "alert." + al.Kind, object: al.Object, detail: detail})
			cancel()
			if err != nil && ctx.Err() == nil {
				m.log.Error("alert: audit entry not written", "kind", al.Kind, "object", al.Object, "err", err)
			}
		}
	}
}

// getAlerts lists the alerts this manager raised since it started, the
// latest first.
func (m *Manager) getAlerts(w http.ResponseWriter, _ *http.Request, _ principal) error {
	m.alerts.mu.Lock()
	out := api.AlertList{Items: make([]api.Alert, 0, len(m.alerts.items))}
	for _, al := range m.alerts.items {
		out.Items = append(out.Items, *al)
	}
	m.alerts.mu.Unlock()
	sort.Slice(out.Items, func(i, j int) bool { return out.Items[i].Last.After(out.Items[j].Last) })
	writeJSON(w, http.StatusOK, out)
	return nil
}
