package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/feed"
	"github.com/bulkhead-dev/bulkhead/internal/manager/identities"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// The workloads and identities in the agents' feed. Identities are given
// and collected by internal/manager/identities; the workloads are written
// by workloads.go.
const (
	prefixFeed       = feed.Prefix
	prefixWorkloads  = feed.WorkloadPrefix // host/namespace/name → api.HostWorkload
	prefixIdentities = identities.Prefix   // %010d → api.Identity
)

func identityKey(id uint32) string { return identities.Key(id) }

func workloadKey(host, ns, name string) string {
	return prefixWorkloads + host + "/" + ns + "/" + name
}

// workloadItem is a workload under feed/workloads/, with the revision it
// changed at.
type workloadItem struct {
	modRev   int64
	workload *api.HostWorkload
}

func decodeWorkload(kv store.KV) (*workloadItem, error) {
	it := &workloadItem{modRev: kv.ModRev, workload: &api.HostWorkload{}}
	if err := json.Unmarshal(kv.Value, it.workload); err != nil {
		return nil, fmt.Errorf("the value is not a workload, as its key names: %w", err)
	}
	return it, nil
}

// namespaceLabels returns the labels of the namespaces at the head.
func (m *Manager) namespaceLabels(ctx context.Context) (map[string]map[string]string, int64, error) {
	_, ps, err := m.head(ctx)
	if err != nil {
		return nil, 0, err
	}
	out := map[string]map[string]string{}
	for _, o := range ps.Objects {
		if o.Ref.Kind != "Namespace" {
			continue
		}
		set, err := m.sets.get(o)
		if err != nil {
			return nil, 0, err
		}
		for _, ns := range set.Namespaces {
			out[ns.Name] = ns.Labels
		}
	}
	return out, ps.Rev(), nil
}

func (m *Manager) getIdentities(w http.ResponseWriter, _ *http.Request, _ principal) error {
	byID := map[uint32]*api.Identity{}
	addrs := map[uint32][]string{}
	m.tab.workloads.Each(prefixWorkloads, func(_ string, it *workloadItem) {
		if it.workload.Identity != 0 {
			addrs[it.workload.Identity] = append(addrs[it.workload.Identity], it.workload.IPs...)
		}
	})
	rev := m.tab.identities.Each(prefixIdentities, func(_ string, it *api.Identity) {
		id := *it
		byID[id.ID] = &id
	})
	out := api.IdentityList{Revision: rev, Items: []api.Identity{}}
	for id, ident := range byID {
		ident.Addresses = addrs[id]
		sort.Strings(ident.Addresses)
		out.Items = append(out.Items, *ident)
	}
	sort.Slice(out.Items, func(i, j int) bool { return out.Items[i].ID < out.Items[j].ID })
	writeJSON(w, http.StatusOK, out)
	return nil
}
