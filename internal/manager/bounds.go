package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/bounds"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// What a host may claim is decided in internal/manager/bounds; here are
// its handlers, the store writes of what a report releases, and the
// audit of refused reports.

// storedWorkloads yields every workload in this manager's copy, under
// the copy's read lock.
func (m *Manager) storedWorkloads() iter.Seq[*api.HostWorkload] {
	return func(yield func(*api.HostWorkload) bool) {
		done := false
		m.tab.workloads.Each(prefixWorkloads, func(_ string, it *workloadItem) {
			if !done && !yield(it.workload) {
				done = true
			}
		})
	}
}

// release removes the holds host's stored report gave back, after its
// workloads are written (an address claimed again is never free between).
func (m *Manager) release(ctx context.Context, p principal, host string, put []api.HostWorkload, deleted []string, replace bool) error {
	ops := m.bounds.Release(host, put, deleted, replace)
	if len(ops) == 0 {
		return nil
	}
	released := make([]string, len(ops))
	for i, op := range ops {
		released[i] = op.Key[strings.LastIndexByte(op.Key, '/')+1:]
	}
	rev, _, err := m.commitAudited(ctx, nil, ops, auditEntry{actor: p, action: "host.release", object: "host/" + host,
		detail: map[string]any{"released": released}})
	if err != nil {
		return err
	}
	return m.hosts.WaitRev(ctx, rev)
}

func (m *Manager) getHostBounds(w http.ResponseWriter, r *http.Request, _ principal) error {
	host := r.PathValue("host")
	out := api.HostBounds{}
	if b := m.bounds.Of(host); b != nil {
		out.Ranges, out.HostIPs, out.Namespaces = prefixStrings(b.Ranges), prefixStrings(b.HostIPs), b.Namespaces
	}
	for a := range m.bounds.HeldOf(host) {
		out.Held = append(out.Held, a.String())
	}
	sort.Strings(out.Held)
	writeJSON(w, http.StatusOK, out)
	return nil
}

func prefixStrings(ps []netip.Prefix) []string {
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// putHostBounds sets what host may claim. It refuses ranges that overlap
// another host's, and bounds that the host's workloads as stored already
// break (the admin first moves or removes those), so that what is
// stored always keeps its own bounds.
func (m *Manager) putHostBounds(w http.ResponseWriter, r *http.Request, p principal) error {
	host := r.PathValue("host")
	var req api.HostBounds
	if err := m.decode(w, r, &req); err != nil {
		return err
	}
	rec, details := m.bounds.Parse(host, req)
	if len(details) == 0 {
		details = bounds.Broken(host, rec, m.storedWorkloads())
	}
	if len(details) > 0 {
		return fault.New(fault.Invalid, details, "the bounds of host %s are invalid; nothing was changed", host)
	}
	value, _ := json.Marshal(rec)
	ctx := r.Context()
	rev, _, err := m.commitAudited(ctx, nil, []store.Op{store.Put(bounds.Key(host), value)},
		auditEntry{actor: p, action: "host.bounds", object: "host/" + host, detail: req})
	if err != nil {
		return err
	}
	if err := m.hosts.WaitRev(ctx, rev); err != nil {
		return err
	}
	return m.getHostBounds(w, r, p)
}

// reportRefusalEvery is how often one host's refused reports are audited: a
// host that keeps sending what is refused (an agent retries) cannot fill
// the store; the entries in between are counted in the next one.
const reportRefusalEvery = 10 * time.Second

// refusalLog rate-limits the audit entries and alerts of refused reports.
type refusalLog struct {
	mu         sync.Mutex
	last       map[string]time.Time
	suppressed map[string]int
}

// due reports whether a refusal of host's is audited now, and how many
// were not since the last one.
func (rl *refusalLog) due(host string, now time.Time) (bool, int) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if rl.last == nil {
		rl.last, rl.suppressed = map[string]time.Time{}, map[string]int{}
	}
	if t, ok := rl.last[host]; ok && now.Sub(t) < reportRefusalEvery {
		rl.suppressed[host]++
		return false, 0
	}
	n := rl.suppressed[host]
	rl.last[host], rl.suppressed[host] = now, 0
	return true, n
}

// refusedReport audits a refused workload report and raises an alert (an
// error in the log): a host claiming what it may not is how a
// compromised host shows itself.
func (m *Manager) refusedReport(ctx context.Context, p principal, host string, err error) {
	var fe *fault.Error
	if !errors.As(err, &fe) {
		return
	}
	// The alert (GET /v1/alerts) is raised once per host and counts the
	// repeats; the audit entries below are rate-limited on their own.
	m.raise("report-refused", "host/"+host, fe.Msg)
	ok, suppressed := m.reportRefusals.due(host, m.now())
	if !ok {
		return
	}
	details := fe.Details
	if len(details) > 20 {
		details = append(details[:20:20], fmt.Sprintf("… and %d more", len(fe.Details)-20))
	}
	m.log.Error("ALERT: a host's workload report was refused", "host", host, "by", p.String(), "reason", fe.Msg,
		"details", strings.Join(details, "; "), "refused_unaudited_since_last", suppressed)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	// The audit entry records the status the report was answered with.
	detail := map[string]any{"status": fault.StatusOf(fe), "reason": fe.Msg, "details": details, "suppressed": suppressed}
	if _, _, err := m.commitAudited(ctx, nil, nil, auditEntry{actor: p, action: "workloads.refused", object: "host/" + host, detail: detail}); err != nil {
		m.log.Error("audit a refused report", "host", host, "err", err)
	}
}
