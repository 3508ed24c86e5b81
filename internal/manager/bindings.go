package manager

import (
	"context"
	"net/http"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/bindings"
)

// Bindings returns the manager's Brewer–Nash bindings
// (internal/manager/bindings), for the escalation path and for tests.
func (m *Manager) Bindings() *bindings.Bindings { return m.bindings }

func (m *Manager) getBindings(w http.ResponseWriter, r *http.Request, _ principal) error {
	bs, err := m.bindings.List(r.Context())
	if err != nil {
		return err
	}
	out := api.BindingList{Items: make([]api.Binding, 0, len(bs))}
	for _, b := range bs {
		out.Items = append(out.Items, wireBinding(b))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// deleteBinding clears a binding, whatever its scope (admins).
func (m *Manager) deleteBinding(w http.ResponseWriter, r *http.Request, p principal) error {
	b, err := m.bindings.Clear(r.Context(), p.actor(), bindingWorkload(r), r.PathValue("class"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wireBinding(b))
	return nil
}

// postBindingEnd ends a session (operators).
func (m *Manager) postBindingEnd(w http.ResponseWriter, r *http.Request, p principal) error {
	b, err := m.bindings.End(r.Context(), p.actor(), bindingWorkload(r), r.PathValue("class"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, wireBinding(b))
	return nil
}

func bindingWorkload(r *http.Request) bindings.Workload {
	return bindings.Workload{Namespace: r.PathValue("namespace"), Name: r.PathValue("name")}
}

func wireBinding(b bindings.Binding) api.Binding {
	in := b.Instance
	return api.Binding{Namespace: in.Namespace, Name: in.Name, Class: b.Class, Dataset: b.Dataset, Scope: b.Scope,
		Host: in.Host, ContainerID: in.ContainerID, Since: b.Since, Expires: b.Expires, Revision: b.Rev}
}

// releaseBindings ends the lifecycle bindings of each workload
// (namespace/name) whose record was removed, when no host holds a record
// of it any more (the inventory is current to the removal: the caller
// waited for the feed). A workload registered again keeps its bindings,
// and so does one whose copy runs on another host.
func (m *Manager) releaseBindings(ctx context.Context, removed []string) error {
	for _, key := range removed {
		if m.inv.Records(key) > 0 {
			continue
		}
		ns, name, _ := strings.Cut(key, "/")
		if _, err := m.bindings.Release(ctx, bindings.Workload{Namespace: ns, Name: name}); err != nil {
			return err
		}
	}
	return nil
}
