package manager

import (
	"context"
	"encoding/json"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/identities"
)

// collectEvery is how often unused identities are removed and every
// workload's identity is checked against its namespace's labels.
const collectEvery = 30 * time.Second

// identityLoop keeps identities right: when a policy change alters a
// namespace's labels, the workloads in it get the identity of their new
// labels; identities no workload uses are removed.
func (m *Manager) identityLoop(ctx context.Context) {
	select {
	case <-m.feed.Ready():
	case <-ctx.Done():
		return
	}
	tick := time.NewTicker(collectEvery)
	defer tick.Stop()
	var seenHead int64
	for {
		ch := m.feed.Notify()
		if head, ok := m.tab.head.Get(keyHead); ok && head.Rev != seenHead {
			seenHead = head.Rev
			m.reidentify(ctx, false)
		}
		select {
		case <-ch:
		case <-tick.C:
			m.reidentify(ctx, true)
			m.collectIdentities(ctx)
		case <-ctx.Done():
			return
		}
	}
}

// reidentify rewrites the workloads whose identity no longer matches
// their namespace's labels; a workload its agent changed meanwhile is
// left for the next round. With force false it does nothing when the
// namespaces' labels are those of its last run.
func (m *Manager) reidentify(ctx context.Context, force bool) {
	nsLabels, _, err := m.namespaceLabels(ctx)
	if err != nil {
		m.log.Warn("reidentify: read namespaces", "err", err)
		return
	}
	sum, _ := json.Marshal(nsLabels)
	if !force && string(sum) == m.lastNSLabels {
		return
	}
	m.lastNSLabels = string(sum)
	idKeys := map[uint32]string{}
	m.tab.identities.Each(prefixIdentities, func(_ string, id *api.Identity) {
		idKeys[id.ID] = identities.LabelKey(id.Namespace, id.NamespaceLabels, id.Labels)
	})
	stale := map[string][]api.HostWorkload{}
	expect := map[string]int64{}
	m.tab.workloads.Each(prefixWorkloads, func(key string, it *workloadItem) {
		wl := it.workload
		if idKeys[wl.Identity] != identities.LabelKey(wl.Namespace, nsLabels[wl.Namespace], wl.Labels) {
			stale[wl.Host] = append(stale[wl.Host], *wl)
			expect[key] = it.modRev
		}
	})
	for host, ws := range stale {
		if _, _, _, err := m.writeWorkloads(ctx, system, host, ws, nil, false, expect); err != nil {
			m.log.Warn("reidentify", "host", host, "err", err)
		}
	}
}

// collectIdentities removes the identities no workload uses
// (identities.Allocator.Collect).
func (m *Manager) collectIdentities(ctx context.Context) {
	removed, err := m.ids.Collect(ctx, m.usedIdentities)
	for _, id := range removed {
		m.log.Debug("removed an unused identity", "id", id)
	}
	if err != nil {
		m.log.Warn("collect identities", "err", err)
	}
}

// usedIdentities reads from the store the identities the workloads use.
func (m *Manager) usedIdentities(ctx context.Context) (map[uint32]bool, error) {
	kvs, _, err := m.st.List(ctx, prefixWorkloads)
	if err != nil {
		return nil, err
	}
	if m.collectHook != nil {
		m.collectHook()
	}
	used := map[uint32]bool{}
	for _, kv := range kvs {
		if it, err := decodeWorkload(kv); err == nil {
			used[it.workload.Identity] = true
		}
	}
	return used, nil
}
