package manager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/bounds"
	"github.com/bulkhead-dev/bulkhead/internal/manager/identities"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/pki"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// reportChunk is how many workloads one Txn of a report writes: each
// costs a put and, for its identity, a condition and a put.
const reportChunk = 40

func (m *Manager) putWorkloads(w http.ResponseWriter, r *http.Request, p principal) error {
	return m.report(w, r, p, true)
}

func (m *Manager) postWorkloads(w http.ResponseWriter, r *http.Request, p principal) error {
	return m.report(w, r, p, false)
}

func (m *Manager) report(w http.ResponseWriter, r *http.Request, p principal, replace bool) error {
	host := r.PathValue("host")
	if err := sameHost(p, host); err != nil {
		return err
	}
	var req api.WorkloadReport
	if err := m.decode(w, r, &req); err != nil {
		return err
	}
	if replace && len(req.Deleted) > 0 {
		return fault.New(fault.BadRequest, nil, "deleted: PUT replaces the host's whole set; list deletions only with POST")
	}
	if err := m.checkWorkloads(host, req.Workloads, req.Deleted, replace); err != nil {
		m.refusedReport(r.Context(), p, host, err)
		return err
	}
	rev, stored, removed, err := m.writeWorkloads(r.Context(), p, host, req.Workloads, req.Deleted, replace, nil)
	if err != nil {
		return err
	}
	if rev > 0 {
		if err := m.feed.WaitRev(r.Context(), rev); err != nil {
			return err
		}
	}
	if err := m.release(r.Context(), p, host, req.Workloads, req.Deleted, replace); err != nil {
		return err
	}
	if err := m.releaseBindings(r.Context(), removed); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.ReportResult{Revision: rev, Workloads: stored})
	return nil
}

// maxHostWorkloads bounds the workloads one host may hold.
const maxHostWorkloads = 10000

// checkWorkloads validates a report whole, naming each field that is
// wrong: every workload with the validator the agents use
// (objects.CheckHostWorkloads), so that the manager never stores what an
// agent would refuse, then what the host may claim (bounds.Checker.Claims).
func (m *Manager) checkWorkloads(host string, ws []api.HostWorkload, deleted []string, replace bool) error {
	var details []string
	bad := func(path, format string, args ...any) {
		details = append(details, path+": "+fmt.Sprintf(format, args...))
	}
	if n := len(ws); n > maxHostWorkloads || (!replace && n+m.inv.HostCounts()[host] > maxHostWorkloads+len(deleted)) {
		return fault.New(fault.TooLarge, nil, "workloads: a host may hold at most %d workloads; this report would give host %s more", maxHostWorkloads, host)
	}
	for i, wl := range ws {
		if wl.Host != "" && wl.Host != host {
			bad(fmt.Sprintf("workloads[%d].host", i), "%q, but this report is for host %s", wl.Host, host)
		}
		if len(wl.IPs) == 0 {
			bad(fmt.Sprintf("workloads[%d].ips", i), "at least one address is required")
		}
	}
	_, errs := objects.CheckHostWorkloads("report of host "+host, ws)
	for _, i := range sortedIndexes(errs) {
		for _, e := range errs[i] {
			details = append(details, e.Path+": "+e.Msg)
		}
	}
	for i, d := range deleted {
		if ns, name, ok := strings.Cut(d, "/"); !ok || pki.ValidHost(ns) != nil || pki.ValidHost(name) != nil {
			bad(fmt.Sprintf("deleted[%d]", i), "%q: want namespace/name", d)
		}
	}
	if len(details) == 0 {
		details = m.claims.Claims(host, ws, deleted, replace)
	}
	if len(details) > 0 {
		return fault.New(fault.Invalid, details, "the workload report of host %s is refused; nothing was stored", host)
	}
	return nil
}

func sortedIndexes[V any](m map[int]V) []int {
	out := make([]int, 0, len(m))
	for i := range m {
		out = append(out, i)
	}
	sort.Ints(out)
	return out
}

// writeWorkloads stores a host's workloads with their identities, in
// Txns of reportChunk workloads. It returns the last revision written
// (0 if nothing changed), the workloads as stored and the
// namespace/name of each record it removed. With expect (key →
// ModRev), each write is conditioned on the workload being as expected,
// and a conflict gives up instead of trying again.
func (m *Manager) writeWorkloads(ctx context.Context, p principal, host string, put []api.HostWorkload, deleted []string, replace bool, expect map[string]int64) (int64, []api.HostWorkload, []string, error) {
	nsLabels, _, err := m.namespaceLabels(ctx)
	if err != nil {
		return 0, nil, nil, err
	}
	kvs, _, err := m.st.List(ctx, prefixWorkloads+host+"/")
	if err != nil {
		return 0, nil, nil, fmt.Errorf("manager: list workloads of host %s: %w", host, err)
	}
	current := map[string][]byte{}
	for _, kv := range kvs {
		current[kv.Key] = kv.Value
	}
	removed := func() []string {
		var out []string
		for _, kv := range kvs {
			if current[kv.Key] == nil {
				out = append(out, strings.TrimPrefix(kv.Key, prefixWorkloads+host+"/"))
			}
		}
		return out
	}
	want := map[string]api.Identity{}
	for i := range put {
		wl := &put[i]
		wl.Host = host
		lk := identities.LabelKey(wl.Namespace, nsLabels[wl.Namespace], wl.Labels)
		want[lk] = api.Identity{Namespace: wl.Namespace, NamespaceLabels: nsLabels[wl.Namespace], Labels: wl.Labels}
	}
	var lastRev int64
	for attempt := 0; ; attempt++ {
		ids, err := m.ids.Resolve(ctx, want)
		if err != nil {
			return 0, nil, removed(), err
		}
		var pending []workloadWrite
		keep := map[string]bool{}
		for i := range put {
			wl := &put[i]
			r := ids[identities.LabelKey(wl.Namespace, nsLabels[wl.Namespace], wl.Labels)]
			wl.Identity = r.ID
			key := workloadKey(host, wl.Namespace, wl.Name)
			keep[key] = true
			value, _ := json.Marshal(wl)
			if !bytes.Equal(current[key], value) {
				pending = append(pending, workloadWrite{op: store.Put(key, value), index: r.Index, id: r.ID})
			}
		}
		for _, d := range deleted {
			ns, name, _ := strings.Cut(d, "/")
			if key := workloadKey(host, ns, name); current[key] != nil {
				pending = append(pending, workloadWrite{op: store.Delete(key)})
			}
		}
		if replace {
			for key := range current {
				if !keep[key] {
					pending = append(pending, workloadWrite{op: store.Delete(key)})
				}
			}
		}
		rev, retry, err := m.commitWorkloads(ctx, p, host, pending, current, expect)
		if err != nil {
			return 0, nil, removed(), err
		}
		lastRev = max(lastRev, rev)
		if !retry || expect != nil {
			return lastRev, put, removed(), nil
		}
		// An identity was removed under the report (the collector found
		// it unused a moment before): resolve again.
		if attempt == 10 {
			return 0, nil, removed(), fault.New(fault.Unavailable, nil, "the identities of host %s's workloads keep being removed under the report; try again", host)
		}
		sleep(ctx, jitter(attempt))
	}
}

// chunkBytes bounds the keys and values of one report Txn, well under
// the store's 1.25 MiB: a bounded workload is at most a few tens of KiB.
const chunkBytes = 512 << 10

// chunkLen is how many of writes the next Txn takes: at most reportChunk,
// and at most chunkBytes of them (but always one).
func chunkLen(writes []workloadWrite) int {
	size := 0
	for i, wr := range writes {
		size += 2 * (len(wr.op.Key) + len(wr.op.Value)) // the value, and the identity's use key beside it
		if i == reportChunk || (i > 0 && size > chunkBytes) {
			return i
		}
	}
	return len(writes)
}

type workloadWrite struct {
	op    store.Op
	index store.KV // the identity's index key: the write is conditioned on it and rewrites its use key
	id    uint32
}

// commitWorkloads writes in chunks; retry is true when an identity was
// removed under a chunk (the chunks before it stay written, and current
// is updated to match).
func (m *Manager) commitWorkloads(ctx context.Context, p principal, host string, writes []workloadWrite, current map[string][]byte, expect map[string]int64) (rev int64, retry bool, err error) {
	sort.Slice(writes, func(i, j int) bool { return writes[i].op.Key < writes[j].op.Key })
	for len(writes) > 0 {
		n := chunkLen(writes)
		chunk := writes[:n]
		var conds []store.Cond
		var ops []store.Op
		touched := map[string]bool{}
		puts, dels := 0, 0
		for _, wr := range chunk {
			ops = append(ops, wr.op)
			if mod, ok := expect[wr.op.Key]; ok {
				conds = append(conds, store.Cond{Key: wr.op.Key, ModRev: mod})
			}
			if wr.op.Delete {
				dels++
				continue
			}
			puts++
			if wr.index.Key != "" && !touched[wr.index.Key] {
				touched[wr.index.Key] = true
				conds = append(conds, store.Unchanged(wr.index))
				ops = append(ops, store.Put(identities.UseKey(wr.index.Key), []byte(strconv.FormatUint(uint64(wr.id), 10))))
			}
		}
		action := "workloads.report"
		if expect != nil {
			action = "workloads.reidentify"
		}
		r, ok, err := m.commitAudited(ctx, conds, ops, auditEntry{actor: p, action: action, object: "host/" + host,
			detail: map[string]int{"put": puts, "deleted": dels}})
		if err != nil {
			return 0, false, err
		}
		if !ok {
			return rev, true, nil
		}
		for _, wr := range chunk {
			if wr.op.Delete {
				delete(current, wr.op.Key)
			} else {
				current[wr.op.Key] = wr.op.Value
			}
		}
		rev = r
		writes = writes[n:]
	}
	return rev, false, nil
}

func (m *Manager) getWorkloads(w http.ResponseWriter, r *http.Request, _ principal) error {
	host := r.URL.Query().Get("host")
	out := api.WorkloadList{Items: []api.HostWorkload{}}
	out.Revision = m.tab.workloads.Each(prefixWorkloads, func(_ string, it *workloadItem) {
		if wl := it.workload; host == "" || wl.Host == host {
			out.Items = append(out.Items, *wl)
		}
	})
	sort.Slice(out.Items, func(i, j int) bool {
		a, b := out.Items[i], out.Items[j]
		return a.Host+"/"+a.Namespace+"/"+a.Name < b.Host+"/"+b.Namespace+"/"+b.Name
	})
	writeJSON(w, http.StatusOK, out)
	return nil
}

// deleteWorkload removes a workload record (an operator clearing what a
// lost host left behind); idempotent. When the host is live, the
// record's addresses stay held for it (internal/manager/bounds) until its own report
// releases them: a live address must not pass to another host in the
// gap before the host reports again.
func (m *Manager) deleteWorkload(w http.ResponseWriter, r *http.Request, p principal) error {
	host := r.PathValue("host")
	key := workloadKey(host, r.PathValue("namespace"), r.PathValue("name"))
	ctx := r.Context()
	kv, err := m.st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		w.WriteHeader(http.StatusNoContent)
		return nil
	} else if err != nil {
		return err
	}
	ops := []store.Op{store.Delete(key)}
	var held []string
	var wl api.HostWorkload
	if err := json.Unmarshal(kv.Value, &wl); err == nil && m.hostLive(host) {
		value, _ := json.Marshal(bounds.Held{Workload: wl.Namespace + "/" + wl.Name})
		for _, s := range wl.IPs {
			if a, err := netip.ParseAddr(s); err == nil {
				ops = append(ops, store.Put(bounds.HeldKey(host, a.Unmap()), value))
				held = append(held, a.Unmap().String())
			}
		}
	}
	rev, ok, err := m.commitAudited(ctx, []store.Cond{store.Unchanged(kv)}, ops,
		auditEntry{actor: p, action: "workload.delete", object: strings.TrimPrefix(key, prefixWorkloads), detail: map[string]any{"held": held}})
	if err != nil {
		return err
	}
	if ok {
		if err := m.feed.WaitRev(ctx, rev); err != nil {
			return err
		}
		if len(held) > 0 {
			if err := m.hosts.WaitRev(ctx, rev); err != nil {
				return err
			}
		}
		if err := m.releaseBindings(ctx, []string{r.PathValue("namespace") + "/" + r.PathValue("name")}); err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// hostLive reports whether host has reported its status lately.
func (m *Manager) hostLive(host string) bool {
	rec, ok := m.hostStatus(host)
	return ok && m.now().Sub(rec.LastSeen) <= 3*lastSeenEvery
}
