package revisions_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/revisions"
	"github.com/bulkhead-dev/bulkhead/internal/manager/seal"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
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

// policies are n stored objects, as the manager keeps them by key.
func policies(n int) map[string]revisions.Object {
	out := map[string]revisions.Object{}
	for i := range n {
		ref := api.ObjectRef{Kind: "Policy", Namespace: "bhm2", Name: fmt.Sprintf("p%04d", i)}
		o := revisions.Blob([]byte(fmt.Sprintf(`{"kind":"Policy","metadata":{"namespace":"bhm2","name":"p%04d"}}`, i)))
		o.Ref = ref
		out[objects.Key(ref)] = o
	}
	return out
}

// commit writes a revision the way the manager does: the blobs, then
// the sealed record as the head and under its number.
func commit(t *testing.T, ctx context.Context, st store.Store, key *seal.Key, h *revisions.History, seq int64, objs map[string]revisions.Object) int64 {
	t.Helper()
	items := map[string][]byte{}
	for _, o := range objs {
		items[o.Hash] = o.JSON
	}
	chunks, order := revisions.Manifest(objs)
	for hash, v := range chunks {
		items[hash] = v
	}
	if err := h.Blobs.Stage(ctx, items); err != nil {
		t.Fatal(err)
	}
	rec := revisions.Record{Seq: seq, Time: time.Now().UTC(), Actor: "bhm2", Objects: len(objs), Manifest: order}
	value := key.Seal(revisions.SealKey, &rec)
	rev, _, err := st.Txn(ctx, nil, []store.Op{store.Put(revisions.HeadKey, value), store.Put(revisions.Key(seq), value)})
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func history(st store.Store, key *seal.Key) *revisions.History {
	return &revisions.History{Blobs: &revisions.Blobs{Store: st},
		Check: func(r *revisions.Record) error { return key.Check(revisions.SealKey, r) }}
}

// TestHeadReadsTheStateCommitted: the head names the objects committed,
// a manifest of many chunks included, and a state read twice is read
// once; before any revision the head is the empty state.
func TestHeadReadsTheStateCommitted(t *testing.T) {
	st, ctx := open(t)
	key := seal.Derive([]byte("bhm2-test-key"))
	h := history(st, key)
	kv, empty, err := h.Head(ctx)
	if err != nil || kv.ModRev != 0 || empty.Rev() != 0 || len(empty.Objects) != 0 {
		t.Fatalf("head of an empty store: %+v %+v %v", kv, empty, err)
	}

	objs := policies(5000) // about 100 bytes each: several manifest chunks
	if _, order := revisions.Manifest(objs); len(order) < 2 {
		t.Fatalf("%d manifest chunks for 5000 objects; want several", len(order))
	}
	rev := commit(t, ctx, st, key, h, 1, objs)
	kv, ps, err := h.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if kv.ModRev != rev || ps.Rev() != rev || ps.Record.Seq != 1 || len(ps.Objects) != len(objs) {
		t.Fatalf("head at %d: state of rev %d, seq %d, %d objects; want rev %d, seq 1, %d", kv.ModRev, ps.Rev(), ps.Record.Seq, len(ps.Objects), rev, len(objs))
	}
	for k, o := range objs {
		if got := ps.Objects[k]; got.Hash != o.Hash || string(got.JSON) != string(o.JSON) || got.Ref != o.Ref {
			t.Fatalf("%s: %+v, want %+v", k, got, o)
		}
	}
	again, _ := h.Load(ctx, ps.Record)
	if again != ps {
		t.Error("a state read twice was read again")
	}
}

// TestTamperingIsRefused: a record whose seal does not verify, and a blob
// whose content is not what its name hashes, are never served; each is
// reported.
func TestTamperingIsRefused(t *testing.T) {
	st, ctx := open(t)
	key := seal.Derive([]byte("bhm2-test-key"))
	objs := policies(3)
	commit(t, ctx, st, key, history(st, key), 1, objs)

	// Another key's history: the record's seal does not verify.
	var tampered []string
	other := history(st, seal.Derive([]byte("bhm2-other-key")))
	other.Tampered = func(k string) { tampered = append(tampered, k) }
	var te *seal.TamperedError
	if _, _, err := other.Head(ctx); !errors.As(err, &te) || te.Key != revisions.Key(1) {
		t.Errorf("a record sealed by another key: %v; want a TamperedError for %s", err, revisions.Key(1))
	}
	if len(tampered) != 1 || tampered[0] != revisions.Key(1) {
		t.Errorf("reported %v", tampered)
	}

	// A blob changed in the store, read by a history that has not cached it.
	var o revisions.Object
	for _, o = range objs {
		break
	}
	if _, _, err := st.Txn(ctx, nil, []store.Op{store.Put(revisions.BlobPrefix+o.Hash, []byte(`{"kind":"Policy","changed":true}`))}); err != nil {
		t.Fatal(err)
	}
	fresh := history(st, key)
	var mismatched string
	fresh.Blobs.OnMismatch = func(k, _ string) { mismatched = k }
	if _, _, err := fresh.Head(ctx); !errors.As(err, &te) || te.Key != revisions.BlobPrefix+o.Hash {
		t.Errorf("a changed blob: %v; want a TamperedError for it", err)
	}
	if mismatched != revisions.BlobPrefix+o.Hash {
		t.Errorf("OnMismatch saw %q", mismatched)
	}
}

// TestStageWritesOnlyWhatIsMissing: blobs known to be stored are not
// written again.
func TestStageWritesOnlyWhatIsMissing(t *testing.T) {
	st, ctx := open(t)
	b := &revisions.Blobs{Store: st}
	a := revisions.Blob([]byte("bhm2-a"))
	if err := b.Stage(ctx, map[string][]byte{a.Hash: a.JSON}); err != nil {
		t.Fatal(err)
	}
	kv, err := st.Get(ctx, revisions.BlobPrefix+a.Hash)
	if err != nil {
		t.Fatal(err)
	}
	c := revisions.Blob([]byte("bhm2-c"))
	if err := b.Stage(ctx, map[string][]byte{a.Hash: a.JSON, c.Hash: c.JSON}); err != nil {
		t.Fatal(err)
	}
	again, _ := st.Get(ctx, revisions.BlobPrefix+a.Hash)
	if again.ModRev != kv.ModRev {
		t.Errorf("a stored blob was written again (rev %d → %d)", kv.ModRev, again.ModRev)
	}
	if got, err := b.Get(ctx, c.Hash); err != nil || string(got) != "bhm2-c" {
		t.Errorf("Get(c) = %q, %v", got, err)
	}
}
