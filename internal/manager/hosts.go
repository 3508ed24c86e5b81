package manager

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Hosts' status reports live under hosts/, outside the feed, so that
// they wake no agent. A report is written when it says something new, or
// when the last one is older than lastSeenEvery; agents report at least
// that often to count as alive.
const (
	prefixHosts   = "hosts/"
	lastSeenEvery = 15 * time.Second
)

type hostRecord struct {
	api.HostStatus
	LastSeen time.Time `json:"lastSeen"`
}

func decodeHost(kv store.KV) (any, error) {
	var h hostRecord
	if err := json.Unmarshal(kv.Value, &h); err != nil {
		return nil, err
	}
	return &h, nil
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
	now := m.now().UTC()
	if v, ok := m.hosts.get(prefixHosts + host); ok {
		old := v.(*hostRecord)
		if old.HostStatus == st && now.Sub(old.LastSeen) < lastSeenEvery {
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
	}
	value, _ := json.Marshal(hostRecord{HostStatus: st, LastSeen: now})
	rev, _, err := m.st.Txn(r.Context(), nil, []store.Op{store.Put(prefixHosts+host, value)})
	if err != nil {
		return err
	}
	if err := m.hosts.waitRev(r.Context(), rev); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
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
	m.auth.each(prefixCerts, func(_ string, v any) {
		if c := v.(*certRecord); c.Revoked == nil {
			get(c.Host)
		}
	})
	m.hosts.each(prefixHosts, func(key string, v any) {
		rec := v.(*hostRecord)
		h := get(strings.TrimPrefix(key, prefixHosts))
		h.Realized, h.Health, h.Version, h.LastSeen = rec.Realized, rec.Health, rec.Version, rec.LastSeen
	})
	m.feed.each(prefixWorkloads, func(_ string, v any) {
		get(v.(*feedItem).workload.Host).Workloads++
	})
	now := m.now()
	out := make([]api.Host, 0, len(hosts))
	for _, h := range hosts {
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
	for {
		ch := m.hosts.notify()
		done, notDone = nil, nil
		for _, h := range hosts {
			v, ok := m.hosts.get(prefixHosts + h)
			if ok && v.(*hostRecord).Realized >= rev {
				done = append(done, h)
			} else {
				notDone = append(notDone, h)
			}
		}
		if len(notDone) == 0 {
			return done, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return done, notDone
		}
	}
}
