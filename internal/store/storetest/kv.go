package storetest

import (
	"errors"
	"slices"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

func testCRUD(t *testing.T, open Opener) {
	s, _ := open(t)
	mustAbsent(t, s, "a")

	r1 := put(t, s, "a", "one")
	kv := get(t, s, "a")
	valueIs(t, kv, "one")
	if kv.CreateRev != r1 || kv.ModRev != r1 {
		t.Fatalf("new key: %+v, want CreateRev and ModRev %d", kv, r1)
	}

	r2 := put(t, s, "a", "two")
	if r2 <= r1 {
		t.Fatalf("update at revision %d, not after %d", r2, r1)
	}
	kv = get(t, s, "a")
	valueIs(t, kv, "two")
	if kv.CreateRev != r1 || kv.ModRev != r2 {
		t.Fatalf("updated key: %+v, want CreateRev %d, ModRev %d", kv, r1, r2)
	}

	r3 := del(t, s, "a")
	if r3 <= r2 {
		t.Fatalf("delete at revision %d, not after %d", r3, r2)
	}
	mustAbsent(t, s, "a")

	r4 := put(t, s, "a", "")
	kv = get(t, s, "a")
	if len(kv.Value) != 0 || kv.CreateRev != r4 || kv.ModRev != r4 {
		t.Fatalf("recreated with an empty value: %+v, want CreateRev and ModRev %d", kv, r4)
	}
	if got := rev(t, s); got != r4 {
		t.Fatalf("Rev = %d, want %d", got, r4)
	}
}

func testListPrefix(t *testing.T, open Opener) {
	s, _ := open(t)
	for _, k := range []string{"b", "a/2", "ab", "a/1", "a/", "a/1/x"} {
		put(t, s, k, "v-"+k)
	}
	last := put(t, s, "c", "v-c")
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"a/", []string{"a/", "a/1", "a/1/x", "a/2"}},
		{"a", []string{"a/", "a/1", "a/1/x", "a/2", "ab"}},
		{"", []string{"a/", "a/1", "a/1/x", "a/2", "ab", "b", "c"}},
		{"z", nil},
	} {
		kvs, r := list(t, s, tc.prefix)
		if !slices.Equal(keysOf(kvs), tc.want) {
			t.Errorf("list %q = %v, want %v", tc.prefix, keysOf(kvs), tc.want)
		}
		if r != last {
			t.Errorf("list %q at revision %d, want %d", tc.prefix, r, last)
		}
		for _, kv := range kvs {
			valueIs(t, kv, "v-"+kv.Key)
			if kv.ModRev == 0 || kv.ModRev > r {
				t.Errorf("list %q: %q has ModRev %d, list revision %d", tc.prefix, kv.Key, kv.ModRev, r)
			}
		}
	}
}

func testValuesAreCopied(t *testing.T, open Opener) {
	s, _ := open(t)
	v := []byte("original")
	txn(t, s, nil, store.Put("k", v))
	copy(v, "CHANGED!")
	kv := get(t, s, "k")
	valueIs(t, kv, "original")
	copy(kv.Value, "CHANGED!")
	valueIs(t, get(t, s, "k"), "original")
	kvs, _ := list(t, s, "")
	copy(kvs[0].Value, "CHANGED!")
	valueIs(t, get(t, s, "k"), "original")
}

func testTxnConditions(t *testing.T, open Opener) {
	s, _ := open(t)
	ctx := ctxFor(t)

	// Absent: create only if missing.
	r1 := txn(t, s, []store.Cond{store.Absent("k")}, store.Put("k", []byte("1")))
	r, ok, err := s.Txn(ctx, []store.Cond{store.Absent("k")}, []store.Op{store.Put("k", []byte("2"))})
	if err != nil || ok || r != r1 {
		t.Fatalf("absent on an existing key: rev %d ok %v err %v; want rev %d, not ok", r, ok, err, r1)
	}

	// Unchanged: compare-and-set.
	kv := get(t, s, "k")
	r2 := txn(t, s, []store.Cond{store.Unchanged(kv)}, store.Put("k", []byte("2")))
	r, ok, err = s.Txn(ctx, []store.Cond{store.Unchanged(kv)}, []store.Op{store.Put("k", []byte("3"))})
	if err != nil || ok || r != r2 {
		t.Fatalf("stale ModRev: rev %d ok %v err %v; want rev %d, not ok", r, ok, err, r2)
	}
	valueIs(t, get(t, s, "k"), "2")

	// The KV of a missing key is the condition "still missing".
	missing, err := s.Get(ctx, "new")
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	txn(t, s, []store.Cond{store.Unchanged(missing)}, store.Put("new", []byte("x")))
	if _, ok, _ := s.Txn(ctx, []store.Cond{store.Unchanged(missing)}, []store.Op{store.Put("new", []byte("y"))}); ok {
		t.Fatal("condition on a missing key held after the key was created")
	}

	// A condition on one key guards ops on others; a deleted key is absent again.
	del(t, s, "new")
	txn(t, s, []store.Cond{store.Absent("new"), {Key: "k", ModRev: r2}}, store.Put("other", []byte("o")))
}

func testTxnAtomic(t *testing.T, open Opener) {
	s, _ := open(t)
	put(t, s, "keep", "k")
	put(t, s, "guard", "g")
	before := rev(t, s)
	ops := []store.Op{store.Put("x", []byte("1")), store.Delete("keep"), store.Put("y", []byte("2"))}

	// The second condition fails: nothing of the txn happens.
	conds := []store.Cond{store.Absent("x"), store.Absent("guard")}
	if _, ok, err := s.Txn(ctxFor(t), conds, ops); err != nil || ok {
		t.Fatalf("txn with a failing condition: ok %v err %v", ok, err)
	}
	mustAbsent(t, s, "x")
	mustAbsent(t, s, "y")
	valueIs(t, get(t, s, "keep"), "k")
	if got := rev(t, s); got != before {
		t.Fatalf("a failed txn moved the revision from %d to %d", before, got)
	}

	// All conditions hold: all of it happens.
	r := txn(t, s, conds[:1], ops...)
	valueIs(t, get(t, s, "x"), "1")
	valueIs(t, get(t, s, "y"), "2")
	mustAbsent(t, s, "keep")
	if get(t, s, "x").ModRev != r || get(t, s, "y").ModRev != r {
		t.Fatalf("ops of one txn at different revisions")
	}
}

func testOneRevisionPerTxn(t *testing.T, open Opener) {
	s, _ := open(t)
	put(t, s, "gone", "g")
	before := rev(t, s)
	r := txn(t, s, nil, store.Put("a", []byte("1")), store.Put("b", []byte("2")), store.Delete("gone"), store.Put("c", []byte("3")))
	if r != before+1 {
		t.Fatalf("txn of four ops: revision %d, want %d", r, before+1)
	}
	if got := rev(t, s); got != r {
		t.Fatalf("Rev = %d after a txn at %d", got, r)
	}
	for _, k := range []string{"a", "b", "c"} {
		if kv := get(t, s, k); kv.ModRev != r || kv.CreateRev != r {
			t.Fatalf("%q: %+v, want revision %d", k, kv, r)
		}
	}

	// A txn that changes nothing creates no revision.
	for _, ops := range [][]store.Op{nil, {store.Delete("never-there")}} {
		got, ok, err := s.Txn(ctxFor(t), nil, ops)
		if err != nil || !ok || got != r {
			t.Fatalf("txn %v changing nothing: rev %d ok %v err %v; want rev %d", ops, got, ok, err, r)
		}
	}
	if got := rev(t, s); got != r {
		t.Fatalf("Rev = %d after txns that changed nothing, want %d", got, r)
	}
}
