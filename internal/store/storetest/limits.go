package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

func testLimits(t *testing.T, open Opener) {
	s, _ := open(t)
	ctx := ctxFor(t)
	l := store.Limits{}.WithDefaults()
	long := strings.Repeat("k", l.MaxKeyBytes)
	big := make([]byte, l.MaxValueBytes)
	manyOps := func(n int) []store.Op {
		ops := make([]store.Op, n)
		for i := range ops {
			ops[i] = store.Put(fmt.Sprintf("many/%03d", i), []byte("v"))
		}
		return ops
	}
	manyConds := func(n int) []store.Cond {
		conds := make([]store.Cond, n)
		for i := range conds {
			conds[i] = store.Absent(fmt.Sprintf("cond/%03d", i))
		}
		return conds
	}

	// At the limits: accepted.
	txn(t, s, nil, store.Put(long, []byte("v")))
	txn(t, s, nil, store.Put("big", big))
	txn(t, s, manyConds(l.MaxTxnOps), manyOps(l.MaxTxnOps)...)
	before := rev(t, s)

	// Over them: refused, naming the limit, and nothing written.
	half := make([]byte, l.MaxTxnBytes/2+1)
	for _, tc := range []struct {
		name  string
		conds []store.Cond
		ops   []store.Op
		want  error
		says  string
	}{
		{"long key", nil, []store.Op{store.Put(long+"k", nil)}, store.ErrTooLarge, fmt.Sprintf("key is %d bytes, the limit is %d", l.MaxKeyBytes+1, l.MaxKeyBytes)},
		{"long condition key", []store.Cond{store.Absent(long + "k")}, nil, store.ErrTooLarge, fmt.Sprintf("the limit is %d", l.MaxKeyBytes)},
		{"big value", nil, []store.Op{store.Put("big", append(big, 0))}, store.ErrTooLarge, fmt.Sprintf("value is %d bytes, the limit is %d", l.MaxValueBytes+1, l.MaxValueBytes)},
		{"many ops", nil, manyOps(l.MaxTxnOps + 1), store.ErrTooLarge, fmt.Sprintf("%d ops, the limit is %d", l.MaxTxnOps+1, l.MaxTxnOps)},
		{"many conditions", manyConds(l.MaxTxnOps + 1), nil, store.ErrTooLarge, fmt.Sprintf("%d conditions, the limit is %d", l.MaxTxnOps+1, l.MaxTxnOps)},
		{"big txn", nil, []store.Op{store.Put("h1", half), store.Put("h2", half)}, store.ErrTooLarge, fmt.Sprintf("the limit is %d", l.MaxTxnBytes)},
		{"empty key", nil, []store.Op{store.Put("", nil)}, store.ErrInvalid, "empty key"},
		{"key twice", nil, []store.Op{store.Put("a", nil), store.Delete("a")}, store.ErrInvalid, `ops 0 and 1 both change "a"`},
		{"delete with a value", nil, []store.Op{{Key: "a", Value: []byte("v"), Delete: true}}, store.ErrInvalid, "carries a value"},
		{"negative condition", []store.Cond{{Key: "a", ModRev: -1}}, nil, store.ErrInvalid, "ModRev -1"},
	} {
		_, _, err := s.Txn(ctx, tc.conds, tc.ops)
		if !errors.Is(err, tc.want) || !strings.HasPrefix(err.Error(), "store: ") || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v; want %v saying %q", tc.name, err, tc.want, tc.says)
		}
	}
	if got := rev(t, s); got != before {
		t.Fatalf("refused txns moved the revision from %d to %d", before, got)
	}

	if _, err := s.Get(ctx, long+"k"); !errors.Is(err, store.ErrTooLarge) {
		t.Errorf("get with a long key: %v, want ErrTooLarge", err)
	}
	if _, err := s.Get(ctx, ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("get with an empty key: %v, want ErrInvalid", err)
	}
	if _, _, err := s.List(ctx, long+"k"); !errors.Is(err, store.ErrTooLarge) {
		t.Errorf("list with a long prefix: %v, want ErrTooLarge", err)
	}
	if err := ended(t, s.Watch(ctx, long+"k", 0)); !errors.Is(err, store.ErrTooLarge) {
		t.Errorf("watch with a long prefix: %v, want ErrTooLarge", err)
	}
	if err := ended(t, s.Watch(ctx, "", -1)); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("watch from revision -1: %v, want ErrInvalid", err)
	}
}

func testClosed(t *testing.T, open Opener) {
	s, another := open(t)
	other := another()
	r := put(t, s, "k", "v")
	w := s.Watch(t.Context(), "", r+1)
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := ended(t, w); !errors.Is(err, store.ErrClosed) {
		t.Errorf("watch across close: %v, want ErrClosed", err)
	}
	ctx := context.Background()
	_, errGet := s.Get(ctx, "k")
	_, _, errList := s.List(ctx, "")
	_, _, errTxn := s.Txn(ctx, nil, []store.Op{store.Put("k", nil)})
	errCompact := s.Compact(ctx, r)
	_, errRev := s.Rev(ctx)
	errWatch := ended(t, s.Watch(ctx, "", 0))
	for name, err := range map[string]error{"get": errGet, "list": errList, "txn": errTxn, "compact": errCompact, "rev": errRev, "watch": errWatch} {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s on a closed store: %v, want ErrClosed", name, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	// Another handle on the same backing is unaffected.
	valueIs(t, get(t, other, "k"), "v")
}
