package mirror_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/manager/mirror"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

type pet struct {
	Name string `json:"name"`
}

type toy struct {
	Size int `json:"size"`
}

func decodeJSON[T any](kv store.KV) (*T, error) {
	v := new(T)
	if err := json.Unmarshal(kv.Value, v); err != nil {
		return nil, err
	}
	return v, nil
}

// rig is a store and a mirror of its prefix x/, with a table of pets
// under x/pets/ and one of toys under x/toys/; x/notes/ is ignored.
type rig struct {
	st      store.Store
	ctx     context.Context
	mi      *mirror.Mirror
	pets    *mirror.Table[pet]
	toys    *mirror.Table[toy]
	refused map[string]int
	changes []string
	resets  int
}

func newRig(t *testing.T) *rig {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "bhm2.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	r := &rig{st: st, ctx: ctx, refused: map[string]int{}}
	r.mi = mirror.New(st, "x/", slog.New(slog.NewTextHandler(io.Discard, nil)))
	r.mi.Ignore("x/notes/")
	r.pets = mirror.Add(r.mi, mirror.Under("x/pets/"), decodeJSON[pet])
	r.toys = mirror.Add(r.mi, mirror.Under("x/toys/"), decodeJSON[toy])
	r.mi.OnRefuse = func(key string, err error) { r.refused[key]++ }
	r.mi.OnReset = func() { r.resets++ }
	r.pets.OnChange = func(key string, old, new *pet) {
		r.changes = append(r.changes, key+" "+name(old)+"→"+name(new))
	}
	return r
}

func name(p *pet) string {
	if p == nil {
		return "-"
	}
	return p.Name
}

func (r *rig) run(t *testing.T) {
	ctx, cancel := context.WithCancel(r.ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.mi.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-r.mi.Ready():
	case <-r.ctx.Done():
		t.Fatal("the mirror never read the store")
	}
}

// txn commits ops and waits until the mirror holds them.
func (r *rig) txn(t *testing.T, ops ...store.Op) {
	t.Helper()
	rev, ok, err := r.st.Txn(r.ctx, nil, ops)
	if err != nil || !ok {
		t.Fatalf("txn: %v %v", ok, err)
	}
	if err := r.mi.WaitRev(r.ctx, rev); err != nil {
		t.Fatal(err)
	}
}

func (r *rig) petNames() []string {
	var out []string
	r.pets.Each("x/pets/", func(key string, p *pet) { out = append(out, strings.TrimPrefix(key, "x/pets/")+"="+p.Name) })
	sort.Strings(out)
	return out
}

// TestTablesHoldTypedValues: each table holds the values of the keys it
// claims, decoded into its type, from the first list and then from the
// watch; a change and a delete reach OnChange with the old and new
// values; a list resets first.
func TestTablesHoldTypedValues(t *testing.T) {
	r := newRig(t)
	if _, _, err := r.st.Txn(r.ctx, nil, []store.Op{store.Put("x/pets/a", []byte(`{"name":"Ada"}`)),
		store.Put("x/toys/t", []byte(`{"size":3}`)), store.Put("x/notes/n", []byte(`not json`))}); err != nil {
		t.Fatal(err)
	}
	r.run(t)
	r.txn(t, store.Put("x/pets/b", []byte(`{"name":"Bo"}`)))
	r.txn(t, store.Put("x/pets/a", []byte(`{"name":"Ann"}`)), store.Delete("x/pets/b"))

	if got, want := strings.Join(r.petNames(), " "), "a=Ann"; got != want {
		t.Errorf("pets %q, want %q", got, want)
	}
	if toy, ok := r.toys.Get("x/toys/t"); !ok || toy.Size != 3 {
		t.Errorf("toy %+v %v, want size 3", toy, ok)
	}
	if _, ok := r.pets.Get("x/toys/t"); ok {
		t.Error("the pets' table holds a toy's key")
	}
	want := "x/pets/a -→Ada, x/pets/b -→Bo, x/pets/a Ada→Ann, x/pets/b Bo→-"
	if got := strings.Join(r.changes, ", "); got != want || r.resets != 1 {
		t.Errorf("changes %q after %d resets; want %q after 1", got, r.resets, want)
	}
	if n := r.mi.Refused(); n != 0 {
		t.Errorf("%d values refused (%v); the ignored note is not one", n, r.refused)
	}
}

// TestValuesOfTheWrongShapeAreRefused: a value that does not decode into
// its table's type, or a key no table claims, is refused where it
// enters, from the list and from the watch: left out, the value it
// replaces removed (a reader fails closed), counted and reported.
func TestValuesOfTheWrongShapeAreRefused(t *testing.T) {
	r := newRig(t)
	if _, _, err := r.st.Txn(r.ctx, nil, []store.Op{store.Put("x/pets/bad", []byte(`[1,2]`)),
		store.Put("x/pets/a", []byte(`{"name":"Ada"}`))}); err != nil {
		t.Fatal(err)
	}
	r.run(t)
	r.txn(t, store.Put("x/pets/a", []byte(`{"name":7}`)), store.Put("x/toys/t", []byte(`"big"`)),
		store.Put("x/other", []byte(`{}`)))

	if got := r.petNames(); len(got) != 0 {
		t.Errorf("pets %v; want none: a refused value leaves its key empty", got)
	}
	if _, ok := r.toys.Get("x/toys/t"); ok {
		t.Error("a toy that is a string was kept")
	}
	want := map[string]int{"x/pets/bad": 1, "x/pets/a": 1, "x/toys/t": 1, "x/other": 1}
	for k, n := range want {
		if r.refused[k] != n {
			t.Errorf("refusals %v; want %v", r.refused, want)
			break
		}
	}
	if n := r.mi.Refused(); n != int64(len(want)) {
		t.Errorf("Refused() = %d, want %d", n, len(want))
	}
	if got := strings.Join(r.changes, ", "); got != "x/pets/a -→Ada, x/pets/a Ada→-" {
		t.Errorf("changes %q", got)
	}
}

// TestDecodeErrorsReachOnRefuse: the decoder's own error is what
// OnRefuse sees, so that the manager can tell a seal that does not
// verify (alerted already) from a value of the wrong shape.
func TestDecodeErrorsReachOnRefuse(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "bhm2.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errSealed := errors.New("bhm2: seal does not verify")
	mi := mirror.New(st, "y/", slog.New(slog.NewTextHandler(io.Discard, nil)))
	mirror.Add(mi, mirror.Under("y/"), func(store.KV) (*pet, error) { return nil, errSealed })
	var got error
	mi.OnRefuse = func(_ string, err error) { got = err }
	rev, _, err := st.Txn(ctx, nil, []store.Op{store.Put("y/a", []byte(`{}`))})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); mi.Run(rctx) }()
	if err := mi.WaitRev(ctx, rev); err != nil {
		t.Fatal(err)
	}
	stop()
	<-done
	if !errors.Is(got, errSealed) {
		t.Errorf("OnRefuse saw %v, want the decoder's error", got)
	}
}
