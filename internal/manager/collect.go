package manager

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/store"
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
		idKeys[id.ID] = labelKey(id.Namespace, id.NamespaceLabels, id.Labels)
	})
	stale := map[string][]api.HostWorkload{}
	expect := map[string]int64{}
	m.tab.workloads.Each(prefixWorkloads, func(key string, it *workloadItem) {
		wl := it.workload
		if idKeys[wl.Identity] != labelKey(wl.Namespace, nsLabels[wl.Namespace], wl.Labels) {
			stale[wl.Host] = append(stale[wl.Host], *wl)
			expect[key] = it.modRev
		}
	})
	for host, ws := range stale {
		if _, _, err := m.writeWorkloads(ctx, system, host, ws, nil, false, expect); err != nil {
			m.log.Warn("reidentify", "host", host, "err", err)
		}
	}
}

// collectIdentities removes the identities no workload uses. The index
// and the use keys are read before the workloads, and each removal is
// conditioned on both: a report that used the identity after they were
// read rewrote its use key, so the removal fails; one before is in the
// workloads read.
func (m *Manager) collectIdentities(ctx context.Context) {
	index, _, err := m.st.List(ctx, prefixIDIndex)
	if err != nil {
		m.log.Warn("collect identities", "err", err)
		return
	}
	uses, _, err := m.st.List(ctx, prefixIDUse)
	if err != nil {
		m.log.Warn("collect identities", "err", err)
		return
	}
	useRev := make(map[string]int64, len(uses))
	for _, kv := range uses {
		useRev[kv.Key] = kv.ModRev
	}
	kvs, _, err := m.st.List(ctx, prefixWorkloads)
	if err != nil {
		m.log.Warn("collect identities", "err", err)
		return
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
	for _, kv := range index {
		id, err := strconv.ParseUint(string(kv.Value), 10, 32)
		if err != nil || used[uint32(id)] {
			continue
		}
		use := useKey(kv.Key)
		conds := []store.Cond{store.Unchanged(kv), {Key: use, ModRev: useRev[use]}}
		ops := []store.Op{store.Delete(kv.Key), store.Delete(use), store.Delete(identityKey(uint32(id)))}
		_, ok, err := m.st.Txn(ctx, conds, ops)
		if err != nil {
			m.log.Warn("collect identity", "id", id, "err", err)
			return
		}
		if ok {
			m.log.Debug("removed an unused identity", "id", id)
		}
	}
}
