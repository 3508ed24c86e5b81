package identities_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/identities"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

func open(t *testing.T) (store.Store, context.Context) {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "bhm2.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return st, ctx
}

// want is the identities of apps app0..app(n-1) in namespace bhm2.
func want(n int) map[string]api.Identity {
	out := map[string]api.Identity{}
	for i := range n {
		labels := map[string]string{"app": fmt.Sprintf("app%d", i)}
		out[identities.LabelKey("bhm2", nil, labels)] = api.Identity{Namespace: "bhm2", Labels: labels}
	}
	return out
}

// TestResolveGivesOneNumberPerLabels: labels get numbers from First on,
// the same labels the same number at every call, each stored with its
// labels; nil and empty label maps are the same labels.
func TestResolveGivesOneNumberPerLabels(t *testing.T) {
	st, ctx := open(t)
	a := &identities.Allocator{Store: st}
	w := want(70) // more than one allocation Txn
	first, err := a.Resolve(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint32]bool{}
	for lk, r := range first {
		if r.ID < identities.First || seen[r.ID] || r.Index.Key != identities.IndexKey(lk) || r.Index.ModRev == 0 {
			t.Fatalf("%s: %+v", lk, r)
		}
		seen[r.ID] = true
		kv, err := st.Get(ctx, identities.Key(r.ID))
		if err != nil {
			t.Fatal(err)
		}
		var id api.Identity
		if err := json.Unmarshal(kv.Value, &id); err != nil || id.ID != r.ID || identities.LabelKey(id.Namespace, id.NamespaceLabels, id.Labels) != lk {
			t.Fatalf("identity %d stored as %s (%v)", r.ID, kv.Value, err)
		}
	}
	again, err := a.Resolve(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	for lk, r := range again {
		if r.ID != first[lk].ID || r.Index.ModRev != first[lk].Index.ModRev {
			t.Errorf("%s: %+v again, first %+v", lk, r, first[lk])
		}
	}
	if identities.LabelKey("bhm2", nil, nil) != identities.LabelKey("bhm2", map[string]string{}, map[string]string{}) {
		t.Error("nil and empty labels differ")
	}
}

// TestManagersAgree: two allocators over one store (two managers),
// resolving overlapping labels at once, give each labels one number.
func TestManagersAgree(t *testing.T) {
	st, ctx := open(t)
	w := want(40)
	var got [4]map[string]identities.Resolved
	var errs [4]error
	var wg sync.WaitGroup
	for i := range got {
		a := &identities.Allocator{Store: st}
		wg.Add(1)
		go func() { defer wg.Done(); got[i], errs[i] = a.Resolve(ctx, w) }()
	}
	wg.Wait()
	byID := map[uint32]string{}
	for i := range got {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		for lk, r := range got[i] {
			if r.ID != got[0][lk].ID {
				t.Errorf("%s: %d and %d", lk, r.ID, got[0][lk].ID)
			}
			if other, ok := byID[r.ID]; ok && other != lk {
				t.Errorf("identity %d given to %s and %s", r.ID, lk, other)
			}
			byID[r.ID] = lk
		}
	}
}

// TestCollectRemovesWhatNoWorkloadUses: an identity no workload uses is
// removed with its index and use keys; one in use is kept, and so is one
// a report used (rewrote its use key) while the collector decided; the
// labels of a removed one come back with a new number.
func TestCollectRemovesWhatNoWorkloadUses(t *testing.T) {
	st, ctx := open(t)
	a := &identities.Allocator{Store: st}
	w := want(3)
	ids, err := a.Resolve(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	lk := func(i int) string {
		return identities.LabelKey("bhm2", nil, map[string]string{"app": fmt.Sprintf("app%d", i)})
	}
	inUse, raced, gone := ids[lk(0)], ids[lk(1)], ids[lk(2)]

	removed, err := a.Collect(ctx, func(ctx context.Context) (map[uint32]bool, error) {
		// A report uses raced after the collector read the use keys.
		use := identities.UseKey(raced.Index.Key)
		if _, _, err := st.Txn(ctx, []store.Cond{store.Unchanged(raced.Index)},
			[]store.Op{store.Put(use, []byte(strconv.FormatUint(uint64(raced.ID), 10)))}); err != nil {
			return nil, err
		}
		return map[uint32]bool{inUse.ID: true}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != gone.ID {
		t.Fatalf("removed %v, want only %d", removed, gone.ID)
	}
	for _, k := range []string{identities.Key(gone.ID), gone.Index.Key, identities.UseKey(gone.Index.Key)} {
		if _, err := st.Get(ctx, k); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s after collecting: %v", k, err)
		}
	}
	for _, r := range []identities.Resolved{inUse, raced} {
		if _, err := st.Get(ctx, identities.Key(r.ID)); err != nil {
			t.Errorf("identity %d removed: %v", r.ID, err)
		}
	}
	back, err := a.Resolve(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	if r := back[lk(2)]; r.ID <= gone.ID {
		t.Errorf("labels back got %d; want a new number above %d", r.ID, gone.ID)
	}
}
