package manager

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Identities: one number per distinct (namespace, namespace labels,
// workload labels), the same on every host. The counter only grows, so a
// number is never given to other labels, in use or not. The index maps
// the labels' hash to the number and is written once, when the number is
// given. A report that uses an identity is conditioned on its index key
// (so that it never uses an identity the collector has just removed) and
// rewrites the identity's use key in the same Txn as the workloads; the
// collector removes an unused identity with a condition on both keys, so
// it never removes one that a report has just used. Reports do not
// condition on the use key: concurrent reports of the same labels do not
// conflict with each other.
const (
	prefixFeed       = "feed/"
	prefixWorkloads  = "feed/workloads/"  // host/namespace/name → api.HostWorkload
	prefixIdentities = "feed/identities/" // %010d → api.Identity
	keyIDCounter     = "ids/counter"
	prefixIDIndex    = "ids/labels/" // hash of labelKey → id
	prefixIDUse      = "ids/used/"   // hash of labelKey → id, rewritten by each report that uses it
	firstIdentity    = 256           // 1..255 are reserved for fixed identities
	allocBatch       = 30            // identities allocated per Txn
	// casDeadline bounds how long a write that lost a compare-and-set to
	// another manager keeps trying before it answers 503.
	casDeadline = 10 * time.Second
)

func identityKey(id uint32) string { return fmt.Sprintf("%s%010d", prefixIdentities, id) }

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
		return nil, err
	}
	return it, nil
}

// labelKey is the canonical form of an identity's labels.
func labelKey(ns string, nsLabels, labels map[string]string) string {
	data, _ := json.Marshal(struct {
		NS       string            `json:"ns"`
		NSLabels map[string]string `json:"nsLabels"`
		Labels   map[string]string `json:"labels"`
	}{ns, nonNil(nsLabels), nonNil(labels)})
	return string(data)
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func indexKey(lk string) string {
	sum := sha256.Sum256([]byte(lk))
	return prefixIDIndex + hex.EncodeToString(sum[:16])
}

// useKey is the key a report rewrites when it uses the identity whose
// index key is index.
func useKey(index string) string { return prefixIDUse + strings.TrimPrefix(index, prefixIDIndex) }

// resolved is an identity and its index key as read: a Txn that uses the
// identity is conditioned on it.
type resolved struct {
	id    uint32
	index store.KV
}

// resolveIdentities returns the identity of each label key, allocating
// those that have none, with compare-and-set on the counter.
func (m *Manager) resolveIdentities(ctx context.Context, want map[string]api.Identity) (map[string]resolved, error) {
	out := make(map[string]resolved, len(want))
	lks := make([]string, 0, len(want))
	for lk := range want {
		lks = append(lks, lk)
	}
	missing, err := m.readIndex(ctx, lks, out)
	if err != nil {
		return nil, err
	}
	sort.Strings(missing)
	for len(missing) > 0 {
		n := min(len(missing), allocBatch)
		if err := m.allocate(ctx, missing[:n], want, out); err != nil {
			return nil, err
		}
		missing = missing[n:]
	}
	return out, nil
}

// readIndex resolves the label keys that have an identity into out and
// returns those that have none.
func (m *Manager) readIndex(ctx context.Context, lks []string, out map[string]resolved) (missing []string, err error) {
	for _, lk := range lks {
		kv, err := m.st.Get(ctx, indexKey(lk))
		switch {
		case err == nil:
			id, perr := strconv.ParseUint(string(kv.Value), 10, 32)
			if perr != nil {
				return nil, fmt.Errorf("manager: identity index %s: %w", kv.Key, perr)
			}
			out[lk] = resolved{id: uint32(id), index: kv}
		case errors.Is(err, store.ErrNotFound):
			missing = append(missing, lk)
		default:
			return nil, fmt.Errorf("manager: read identity index %s: %w", indexKey(lk), err)
		}
	}
	return missing, nil
}

// allocate gives numbers to label keys, in one Txn. This manager's
// allocations take turns (allocMu), so only another manager's can win
// the counter's compare-and-set; then it reads again what that one
// allocated and tries again with a jittered backoff, for at most
// casDeadline.
func (m *Manager) allocate(ctx context.Context, lks []string, want map[string]api.Identity, out map[string]resolved) error {
	m.allocMu.Lock()
	defer m.allocMu.Unlock()
	deadline := time.Now().Add(casDeadline)
	for attempt := 0; ; attempt++ {
		// Another report may have allocated some meanwhile.
		still, err := m.readIndex(ctx, lks, out)
		if err != nil {
			return err
		}
		if lks = still; len(lks) == 0 {
			return nil
		}
		ok, err := m.allocateOnce(ctx, lks, want, out)
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fault.New(fault.Unavailable, nil, "identity allocation kept losing to other managers for %s; try again", casDeadline)
		}
		sleep(ctx, jitter(attempt))
	}
}

// allocateOnce tries one Txn; ok is false when the counter or an index
// key changed since it was read.
func (m *Manager) allocateOnce(ctx context.Context, lks []string, want map[string]api.Identity, out map[string]resolved) (bool, error) {
	counter, err := m.st.Get(ctx, keyIDCounter)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, fmt.Errorf("manager: read identity counter: %w", err)
	}
	next := uint64(firstIdentity)
	if counter.ModRev != 0 {
		last, err := strconv.ParseUint(string(counter.Value), 10, 32)
		if err != nil {
			return false, fmt.Errorf("manager: identity counter: %w", err)
		}
		next = last + 1
	}
	conds := []store.Cond{store.Unchanged(counter)}
	var ops []store.Op
	ids := map[string]uint32{}
	for _, lk := range lks {
		id := uint32(next)
		next++
		ids[lk] = id
		ident := want[lk]
		ident.ID, ident.Addresses = id, nil
		value, _ := json.Marshal(ident)
		conds = append(conds, store.Absent(indexKey(lk)))
		ops = append(ops, store.Put(indexKey(lk), []byte(strconv.FormatUint(uint64(id), 10))), store.Put(identityKey(id), value))
	}
	ops = append(ops, store.Put(keyIDCounter, []byte(strconv.FormatUint(next-1, 10))))
	rev, ok, err := m.st.Txn(ctx, conds, ops)
	if err != nil {
		return false, fmt.Errorf("manager: allocate identities: %w", err)
	}
	if !ok {
		return false, nil
	}
	for lk, id := range ids {
		out[lk] = resolved{id: id, index: store.KV{Key: indexKey(lk), ModRev: rev}}
	}
	return true, nil
}

// jitter is the wait before retry attempt n of a lost compare-and-set:
// random, up to 2 ms doubling to 100 ms, so that two managers that keep
// colliding soon stop.
func jitter(n int) time.Duration {
	ceil := min(2*time.Millisecond<<min(n, 6), 100*time.Millisecond)
	return time.Duration(rand.Int64N(int64(ceil))) + time.Millisecond
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
