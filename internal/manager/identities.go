package manager

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Identities: one number per distinct (namespace, namespace labels,
// workload labels), the same on every host. The counter only grows, so a
// number is never given to other labels, in use or not. The index maps
// the labels' hash to the number; a report that uses an identity rewrites
// its index key in the same Txn as the workloads, so that the collector,
// which removes unused identities with a condition on the index key,
// never removes one that a report has just used.
const (
	prefixFeed       = "feed/"
	prefixWorkloads  = "feed/workloads/"  // host/namespace/name → api.HostWorkload
	prefixIdentities = "feed/identities/" // %010d → api.Identity
	keyIDCounter     = "ids/counter"
	prefixIDIndex    = "ids/labels/" // hash of labelKey → id
	firstIdentity    = 256           // 1..255 are reserved for fixed identities
	allocBatch       = 30            // identities allocated per Txn
)

func identityKey(id uint32) string { return fmt.Sprintf("%s%010d", prefixIdentities, id) }

func workloadKey(host, ns, name string) string {
	return prefixWorkloads + host + "/" + ns + "/" + name
}

// feedItem is a decoded value under feed/, with the revision it changed at.
type feedItem struct {
	modRev   int64
	head     *revRecord
	workload *api.HostWorkload
	identity *api.Identity
}

func decodeFeed(kv store.KV) (any, error) {
	it := &feedItem{modRev: kv.ModRev}
	var err error
	switch {
	case kv.Key == keyHead:
		var r any
		r, err = decodeRecord(kv)
		if err == nil {
			it.head = r.(*revRecord)
		}
	case strings.HasPrefix(kv.Key, prefixWorkloads):
		it.workload = &api.HostWorkload{}
		err = json.Unmarshal(kv.Value, it.workload)
	case strings.HasPrefix(kv.Key, prefixIdentities):
		it.identity = &api.Identity{}
		err = json.Unmarshal(kv.Value, it.identity)
	default:
		return nil, fmt.Errorf("unknown feed key %s", kv.Key)
	}
	if err != nil {
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

// resolved is an identity and the index key a Txn must rewrite to use it.
type resolved struct {
	id    uint32
	index store.KV
}

// resolveIdentities returns the identity of each label key, allocating
// those that have none, with compare-and-set on the counter.
func (m *Manager) resolveIdentities(ctx context.Context, want map[string]api.Identity) (map[string]resolved, error) {
	out := make(map[string]resolved, len(want))
	var missing []string
	for lk := range want {
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
			return nil, fmt.Errorf("manager: read identity index: %w", err)
		}
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

// allocate gives numbers to label keys, one Txn, retrying on conflict.
func (m *Manager) allocate(ctx context.Context, lks []string, want map[string]api.Identity, out map[string]resolved) error {
	for attempt := 0; attempt < 50; attempt++ {
		counter, err := m.st.Get(ctx, keyIDCounter)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("manager: read identity counter: %w", err)
		}
		next := uint64(firstIdentity)
		if counter.ModRev != 0 {
			last, err := strconv.ParseUint(string(counter.Value), 10, 32)
			if err != nil {
				return fmt.Errorf("manager: identity counter: %w", err)
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
			return fmt.Errorf("manager: allocate identities: %w", err)
		}
		if ok {
			for lk, id := range ids {
				out[lk] = resolved{id: id, index: store.KV{Key: indexKey(lk), ModRev: rev}}
			}
			return nil
		}
		// Another manager allocated meanwhile, perhaps some of ours.
		var still []string
		for _, lk := range lks {
			kv, err := m.st.Get(ctx, indexKey(lk))
			if err == nil {
				id, _ := strconv.ParseUint(string(kv.Value), 10, 32)
				out[lk] = resolved{id: uint32(id), index: kv}
				continue
			}
			still = append(still, lk)
		}
		if lks = still; len(lks) == 0 {
			return nil
		}
		sleep(ctx, time.Duration(attempt+1)*time.Millisecond)
	}
	return errorf(http.StatusServiceUnavailable, "identity allocation keeps conflicting; try again")
}

// namespaceLabels returns the labels of the namespaces at the head.
func (m *Manager) namespaceLabels(ctx context.Context) (map[string]map[string]string, int64, error) {
	_, ps, err := m.head(ctx)
	if err != nil {
		return nil, 0, err
	}
	out := map[string]map[string]string{}
	for _, o := range ps.objects {
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
	return out, ps.rev(), nil
}

func (m *Manager) getIdentities(w http.ResponseWriter, _ *http.Request, _ principal) error {
	byID := map[uint32]*api.Identity{}
	addrs := map[uint32][]string{}
	rev := m.feed.each(prefixFeed, func(_ string, v any) {
		it := v.(*feedItem)
		switch {
		case it.identity != nil:
			id := *it.identity
			byID[id.ID] = &id
		case it.workload != nil && it.workload.Identity != 0:
			addrs[it.workload.Identity] = append(addrs[it.workload.Identity], it.workload.IPs...)
		}
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
