// Package identities gives workloads their identities: one number per
// distinct (namespace, namespace labels, workload labels), the same on
// every host, and removes the numbers no workload uses.
//
// The counter only grows, so a number is never given to other labels, in
// use or not. The index maps the labels' hash to the number and is
// written once, when the number is given. A report that uses an identity
// is conditioned on its index key (so that it never uses an identity the
// collector has just removed) and rewrites the identity's use key in the
// same Txn as the workloads (the manager's workloads.go); the collector
// removes an unused identity with a condition on both keys, so it never
// removes one that a report has just used. Reports do not condition on
// the use key: concurrent reports of the same labels do not conflict
// with each other. Several managers may allocate over one store: the
// counter's compare-and-set decides.
package identities

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Store keys of the identities.
const (
	Prefix      = "feed/identities/" // %010d → api.Identity, in the agents' feed
	CounterKey  = "ids/counter"
	IndexPrefix = "ids/labels/" // hash of LabelKey → id
	UsePrefix   = "ids/used/"   // hash of LabelKey → id, rewritten by each report that uses it
	First       = 256           // 1..255 are reserved for fixed identities
	allocBatch  = 30            // identities allocated per Txn
	// CASDeadline bounds how long a write that lost a compare-and-set to
	// another manager keeps trying before it answers 503.
	CASDeadline = 10 * time.Second
)

// Allocator gives label keys their identities over a store. It is safe
// for concurrent use; this manager's allocations take turns.
type Allocator struct {
	Store store.Store
	mu    sync.Mutex
}

// Key is the store key of identity id.
func Key(id uint32) string { return fmt.Sprintf("%s%010d", Prefix, id) }

// LabelKey is the canonical form of an identity's labels.
func LabelKey(ns string, nsLabels, labels map[string]string) string {
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

// IndexKey is the store key of the number of label key lk.
func IndexKey(lk string) string {
	sum := sha256.Sum256([]byte(lk))
	return IndexPrefix + hex.EncodeToString(sum[:16])
}

// UseKey is the key a report rewrites when it uses the identity whose
// index key is index.
func UseKey(index string) string { return UsePrefix + strings.TrimPrefix(index, IndexPrefix) }

// Resolved is an identity and its index key as read: a Txn that uses the
// identity is conditioned on Index.
type Resolved struct {
	ID    uint32
	Index store.KV
}

// Resolve returns the identity of each label key of want (the identity
// each would be given: its labels), allocating those that have none.
func (a *Allocator) Resolve(ctx context.Context, want map[string]api.Identity) (map[string]Resolved, error) {
	out := make(map[string]Resolved, len(want))
	lks := make([]string, 0, len(want))
	for lk := range want {
		lks = append(lks, lk)
	}
	missing, err := a.readIndex(ctx, lks, out)
	if err != nil {
		return nil, err
	}
	sort.Strings(missing)
	for len(missing) > 0 {
		n := min(len(missing), allocBatch)
		if err := a.allocate(ctx, missing[:n], want, out); err != nil {
			return nil, err
		}
		missing = missing[n:]
	}
	return out, nil
}

// readIndex resolves the label keys that have an identity into out and
// returns those that have none.
func (a *Allocator) readIndex(ctx context.Context, lks []string, out map[string]Resolved) (missing []string, err error) {
	for _, lk := range lks {
		kv, err := a.Store.Get(ctx, IndexKey(lk))
		switch {
		case err == nil:
			id, perr := strconv.ParseUint(string(kv.Value), 10, 32)
			if perr != nil {
				return nil, fmt.Errorf("manager: identity index %s: %w", kv.Key, perr)
			}
			out[lk] = Resolved{ID: uint32(id), Index: kv}
		case errors.Is(err, store.ErrNotFound):
			missing = append(missing, lk)
		default:
			return nil, fmt.Errorf("manager: read identity index %s: %w", IndexKey(lk), err)
		}
	}
	return missing, nil
}

// allocate gives numbers to label keys, in one Txn. This manager's
// allocations take turns (mu), so only another manager's can win
// the counter's compare-and-set; then it reads again what that one
// allocated and tries again with a jittered backoff, for at most
// CASDeadline.
func (a *Allocator) allocate(ctx context.Context, lks []string, want map[string]api.Identity, out map[string]Resolved) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	deadline := time.Now().Add(CASDeadline)
	for attempt := 0; ; attempt++ {
		// Another report may have allocated some meanwhile.
		still, err := a.readIndex(ctx, lks, out)
		if err != nil {
			return err
		}
		if lks = still; len(lks) == 0 {
			return nil
		}
		ok, err := a.allocateOnce(ctx, lks, want, out)
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fault.New(fault.Unavailable, nil, "identity allocation kept losing to other managers for %s; try again", CASDeadline)
		}
		sleep(ctx, jitter(attempt))
	}
}

// allocateOnce tries one Txn; ok is false when the counter or an index
// key changed since it was read.
func (a *Allocator) allocateOnce(ctx context.Context, lks []string, want map[string]api.Identity, out map[string]Resolved) (bool, error) {
	counter, err := a.Store.Get(ctx, CounterKey)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, fmt.Errorf("manager: read identity counter: %w", err)
	}
	next := uint64(First)
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
		conds = append(conds, store.Absent(IndexKey(lk)))
		ops = append(ops, store.Put(IndexKey(lk), []byte(strconv.FormatUint(uint64(id), 10))), store.Put(Key(id), value))
	}
	ops = append(ops, store.Put(CounterKey, []byte(strconv.FormatUint(next-1, 10))))
	rev, ok, err := a.Store.Txn(ctx, conds, ops)
	if err != nil {
		return false, fmt.Errorf("manager: allocate identities: %w", err)
	}
	if !ok {
		return false, nil
	}
	for lk, id := range ids {
		out[lk] = Resolved{ID: id, Index: store.KV{Key: IndexKey(lk), ModRev: rev}}
	}
	return true, nil
}

// jitter is the wait before retry attempt n of a lost compare-and-set:
// random, up to 2 ms doubling to 100 ms, so that two managers that keep
// colliding soon stop (as the manager's own writes wait).
func jitter(n int) time.Duration {
	ceil := min(2*time.Millisecond<<min(n, 6), 100*time.Millisecond)
	return time.Duration(rand.Int64N(int64(ceil))) + time.Millisecond
}

// Collect removes the identities no workload uses. It reads the index
// and the use keys, then asks used which identities the stored workloads
// use, and conditions each removal on both keys: a report that used the
// identity after they were read rewrote its use key, so the removal
// fails; one before is in what used read. It returns the identities
// removed, and stops at the first error.
func (a *Allocator) Collect(ctx context.Context, used func(context.Context) (map[uint32]bool, error)) ([]uint32, error) {
	index, _, err := a.Store.List(ctx, IndexPrefix)
	if err != nil {
		return nil, fmt.Errorf("identities: list the index: %w", err)
	}
	uses, _, err := a.Store.List(ctx, UsePrefix)
	if err != nil {
		return nil, fmt.Errorf("identities: list the uses: %w", err)
	}
	useRev := make(map[string]int64, len(uses))
	for _, kv := range uses {
		useRev[kv.Key] = kv.ModRev
	}
	inUse, err := used(ctx)
	if err != nil {
		return nil, fmt.Errorf("identities: what the workloads use: %w", err)
	}
	var removed []uint32
	for _, kv := range index {
		id, err := strconv.ParseUint(string(kv.Value), 10, 32)
		if err != nil || inUse[uint32(id)] {
			continue
		}
		use := UseKey(kv.Key)
		conds := []store.Cond{store.Unchanged(kv), {Key: use, ModRev: useRev[use]}}
		ops := []store.Op{store.Delete(kv.Key), store.Delete(use), store.Delete(Key(uint32(id)))}
		_, ok, err := a.Store.Txn(ctx, conds, ops)
		if err != nil {
			return removed, fmt.Errorf("identities: remove %d: %w", id, err)
		}
		if ok {
			removed = append(removed, uint32(id))
		}
	}
	return removed, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
