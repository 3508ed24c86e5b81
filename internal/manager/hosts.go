package manager

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/bounds"
	"github.com/bulkhead-dev/bulkhead/internal/manager/credentials"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// A host's status — health, version, the revision it realized, when it
// was last seen — is soft state: the agent says it again after every
// change and every few seconds, so losing the last tenth of a second of
// it costs nothing. A report is answered from memory at once (this
// manager's apply --wait and GET /v1/hosts see it there), and the
// reports of statusFlushEvery are written together, a few Txns for a
// thousand hosts, so that the other managers over the same store see
// them too and a restarted manager starts from them. Nothing is written
// for a report that says nothing new, unless the stored one is older
// than lastSeenEvery; agents report at least that often to count as
// alive. The records live under hosts/, outside the feed, so that they
// wake no agent.
//
// Choice, for HA: coalesced writes rather than a lease per host. The
// store interface has no leases (the embedded store could not honour
// one), and a lease per host would still be one write per report. With
// several managers, a host's record is the newest of the one this
// manager holds and the one in the store.
const (
	prefixHosts      = bounds.Prefix
	lastSeenEvery    = 15 * time.Second
	statusFlushEvery = 100 * time.Millisecond
	statusFlushOps   = 100 // records per Txn, under the store's 128
)

type hostRecord struct {
	api.HostStatus
	LastSeen time.Time `json:"lastSeen"`
}

// hostTable is the status reports this manager received: the latest per
// host, and those not yet written to the store.
type hostTable struct {
	mu      sync.Mutex
	latest  map[string]hostRecord
	written map[string]hostRecord // what this manager last wrote, per host
	dirty   map[string]bool
	changed chan struct{} // closed and replaced at every report
	kick    chan struct{} // wakes the writer; capacity 1
}

func newHostTable() *hostTable {
	return &hostTable{latest: map[string]hostRecord{}, written: map[string]hostRecord{}, dirty: map[string]bool{},
		changed: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// report records a host's status, and marks it for writing when it says
// something new or the stored one is getting old.
func (ht *hostTable) report(host string, rec hostRecord) {
	ht.mu.Lock()
	ht.latest[host] = rec
	w, ok := ht.written[host]
	if !ok || w.HostStatus != rec.HostStatus || rec.LastSeen.Sub(w.LastSeen) >= lastSeenEvery {
		ht.dirty[host] = true
	}
	close(ht.changed)
	ht.changed = make(chan struct{})
	ht.mu.Unlock()
	select {
	case ht.kick <- struct{}{}:
	default:
	}
}

func (ht *hostTable) get(host string) (hostRecord, bool) {
	ht.mu.Lock()
	defer ht.mu.Unlock()
	rec, ok := ht.latest[host]
	return rec, ok
}

func (ht *hostTable) notify() <-chan struct{} {
	ht.mu.Lock()
	defer ht.mu.Unlock()
	return ht.changed
}

// take returns the records to write and forgets that they are due.
func (ht *hostTable) take() map[string]hostRecord {
	ht.mu.Lock()
	defer ht.mu.Unlock()
	out := make(map[string]hostRecord, len(ht.dirty))
	for h := range ht.dirty {
		out[h] = ht.latest[h]
	}
	clear(ht.dirty)
	return out
}

// wrote records what was written; failed marks records due again.
func (ht *hostTable) wrote(recs map[string]hostRecord, failed bool) {
	ht.mu.Lock()
	defer ht.mu.Unlock()
	for h, rec := range recs {
		if failed {
			ht.dirty[h] = true
		} else {
			ht.written[h] = rec
		}
	}
}

func (m *Manager) putStatus(w http.ResponseWriter, r *http.Request, p principal) error {
	host := r.PathValue("host")
	if err := sameHost(p, host); err != nil {
		return err
	}
	var st api.HostStatus
	if err := m.decode(w, r, &st); err != nil {
		return err
	}
	if st.Health == "" {
		st.Health = "ok"
	}
	m.hostTab.report(host, hostRecord{HostStatus: st, LastSeen: m.now().UTC()})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// statusWriter writes the reports of each statusFlushEvery together
// until ctx ends, then what is left.
func (m *Manager) statusWriter(ctx context.Context) {
	backoff := statusFlushEvery
	for {
		select {
		case <-m.hostTab.kick:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			m.writeStatuses(fctx)
			cancel()
			return
		}
		sleep(ctx, statusFlushEvery) // let the reports of a change gather
		if m.writeStatuses(ctx) {
			backoff = statusFlushEvery
			continue
		}
		sleep(ctx, backoff)
		backoff = min(2*backoff, 5*time.Second)
		select {
		case m.hostTab.kick <- struct{}{}:
		default:
		}
	}
}

// writeStatuses writes the records due, statusFlushOps per Txn, leaving
// out those the store holds newer (another manager's); it reports
// whether all were written.
func (m *Manager) writeStatuses(ctx context.Context) bool {
	due := m.hostTab.take()
	hosts := make([]string, 0, len(due))
	for h, rec := range due {
		if stored, ok := m.tab.hostRecs.Get(prefixHosts + h); ok && stored.LastSeen.After(rec.LastSeen) {
			delete(due, h)
			continue
		}
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for len(hosts) > 0 {
		n := min(len(hosts), statusFlushOps)
		ops := make([]store.Op, 0, n)
		batch := make(map[string]hostRecord, n)
		for _, h := range hosts[:n] {
			value, _ := json.Marshal(due[h])
			ops = append(ops, store.Put(prefixHosts+h, value))
			batch[h] = due[h]
		}
		if _, _, err := m.st.Txn(ctx, nil, ops); err != nil {
			if ctx.Err() == nil {
				m.log.Warn("write host statuses; trying again", "hosts", len(hosts), "err", err)
			}
			rest := make(map[string]hostRecord, len(hosts))
			for _, h := range hosts {
				rest[h] = due[h]
			}
			m.hostTab.wrote(rest, true)
			return false
		}
		m.hostTab.wrote(batch, false)
		hosts = hosts[n:]
	}
	return true
}

// hostStatus is the newest status of host: this manager's or the
// store's (another manager's).
func (m *Manager) hostStatus(host string) (hostRecord, bool) {
	rec, ok := m.hostTab.get(host)
	if stored, found := m.tab.hostRecs.Get(prefixHosts + host); found {
		if !ok || stored.LastSeen.After(rec.LastSeen) {
			return *stored, true
		}
	}
	return rec, ok
}

// hostList is every host the manager knows of: those that joined, those
// that reported.
func (m *Manager) hostList() []api.Host {
	hosts := map[string]*api.Host{}
	get := func(name string) *api.Host {
		if h := hosts[name]; h != nil {
			return h
		}
		h := &api.Host{Name: name, Health: "unknown"}
		hosts[name] = h
		return h
	}
	m.tab.certs.Each(credentials.PrefixCerts, func(_ string, c *credentials.Cert) {
		if c.Revoked == nil {
			get(c.Host)
		}
	})
	m.tab.hostRecs.Each(prefixHosts, func(key string, _ *hostRecord) { get(strings.TrimPrefix(key, prefixHosts)) })
	m.tab.boundsRecs.Each(prefixHosts, func(key string, _ *bounds.Record) { host, _ := bounds.KeyParts(key); get(host) })
	m.tab.held.Each(prefixHosts, func(key string, _ *bounds.Held) { host, _ := bounds.KeyParts(key); get(host) })
	m.hostTab.mu.Lock()
	for name := range m.hostTab.latest {
		get(name)
	}
	m.hostTab.mu.Unlock()
	for name, n := range m.inv.HostCounts() {
		get(name).Workloads = n
	}
	now := m.now()
	out := make([]api.Host, 0, len(hosts))
	for _, h := range hosts {
		if rec, ok := m.hostStatus(h.Name); ok {
			h.Realized, h.Health, h.Version, h.LastSeen = rec.Realized, rec.Health, rec.Version, rec.LastSeen
		}
		if !h.LastSeen.IsZero() && now.Sub(h.LastSeen) > 3*lastSeenEvery && h.Health == "ok" {
			h.Health = "stale: not seen for " + now.Sub(h.LastSeen).Round(time.Second).String()
		}
		out = append(out, *h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (m *Manager) getHosts(w http.ResponseWriter, _ *http.Request, _ principal) error {
	writeJSON(w, http.StatusOK, api.HostList{Items: m.hostList()})
	return nil
}

// waitRealized waits until every host in hosts has realized rev, or
// until d has passed; it returns those that have and those that have not.
func (m *Manager) waitRealized(ctx context.Context, rev int64, hosts []string, d time.Duration) (done, notDone []string) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	pending := append([]string(nil), hosts...)
	for {
		local, stored := m.hostTab.notify(), m.hosts.Notify()
		still := pending[:0]
		for _, h := range pending {
			if rec, ok := m.hostStatus(h); ok && rec.Realized >= rev {
				done = append(done, h)
			} else {
				still = append(still, h)
			}
		}
		if pending = still; len(pending) == 0 {
			sort.Strings(done)
			return done, nil
		}
		select {
		case <-local:
		case <-stored:
		case <-ctx.Done():
			sort.Strings(done)
			return done, append([]string(nil), pending...)
		}
	}
}
