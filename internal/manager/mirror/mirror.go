// Package mirror keeps typed in-memory copies of the keys under a prefix
// of the store, current by a watch: list, then follow, and list again
// when the watch ends. The manager's reads that decide nothing (lists,
// authentication, the agents' feed) use them; writes that must not race
// still read the store and commit with conditions.
//
// A prefix may hold records of several kinds (auth/ holds tokens, join
// tokens and certificates), so a Mirror holds one Table per kind, each
// claiming its keys and decoding their values into one Go type, once,
// when they arrive. A value that does not decode into the type its key
// names, or a key that no table claims and the mirror does not ignore,
// is refused there and then: left out (a value it replaces is removed,
// so that a reader fails closed), counted and reported to OnRefuse.
// Readers get typed values and never assert a type, so that a record
// written wrong cannot panic a background loop and take the manager
// down.
//
// A Mirror is safe for concurrent use once Run has started; its tables
// are added, and their hooks set, before.
package mirror

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Mirror is the copy of one prefix of a store.
type Mirror struct {
	st     store.Store
	prefix string
	log    *slog.Logger
	tables []table
	ignore []string
	// OnRefuse, if set, is told of every value refused, with why (the
	// manager raises an alert, once per key, counting repeats); it is
	// called under the mirror's lock and must not read the mirror.
	OnRefuse func(key string, err error)
	// OnReset, if set, is called at every new list, under the lock,
	// before the list's values come to the tables' OnChange as new.
	OnReset func()
	refused atomic.Int64

	mu      sync.RWMutex
	rev     int64
	changed chan struct{} // closed and replaced when rev moves
	ready   chan struct{} // closed after the first list
}

// table is what the mirror asks of a Table, whatever its type.
type table interface {
	claims(key string) bool
	// load decodes kvs (all claimed) and returns what installs them,
	// replacing the table's values, under the lock; and the refusals.
	load(kvs []store.KV) (install func(), refused []refusal)
	// put decodes and installs kv, or removes the key's value if it does
	// not decode (the error); del removes it. Both run under the lock.
	put(kv store.KV) error
	del(key string)
}

type refusal struct {
	key string
	err error
}

// New returns the copy of the keys under prefix of st; Run fills it.
func New(st store.Store, prefix string, log *slog.Logger) *Mirror {
	return &Mirror{st: st, prefix: prefix, log: log.With("mirror", prefix),
		changed: make(chan struct{}), ready: make(chan struct{})}
}

// Ignore names prefixes (under the mirror's) of keys that are not
// copied and not refused: records read only from the store.
func (mi *Mirror) Ignore(prefixes ...string) { mi.ignore = append(mi.ignore, prefixes...) }

// Table is the values of one kind in a Mirror: those of the keys it
// claims, decoded into *T.
type Table[T any] struct {
	mi     *Mirror
	claim  func(key string) bool
	decode func(kv store.KV) (*T, error)
	items  map[string]*T
	// OnChange, if set, sees every change of a value (old nil for a new
	// key, new nil for a delete or a refused value; after a new list,
	// every value as new); it runs under the mirror's lock and must not
	// read the mirror.
	OnChange func(key string, old, new *T)
}

// Add adds to mi the table of the keys claim holds true, whose values
// decode turns into a *T (an error refuses the value). Call it before
// Run.
func Add[T any](mi *Mirror, claim func(key string) bool, decode func(kv store.KV) (*T, error)) *Table[T] {
	t := &Table[T]{mi: mi, claim: claim, decode: decode, items: map[string]*T{}}
	mi.tables = append(mi.tables, t)
	return t
}

// Under is a claim: the keys that begin with prefix.
func Under(prefix string) func(string) bool {
	return func(key string) bool { return strings.HasPrefix(key, prefix) }
}

// Get returns the value of key, if the table holds one.
func (t *Table[T]) Get(key string) (*T, bool) {
	t.mi.mu.RLock()
	v, ok := t.items[key]
	t.mi.mu.RUnlock()
	return v, ok
}

// Each calls fn for every value whose key begins with prefix, in no
// particular order, holding the mirror's read lock (fn must not write
// the mirror's store and wait for the copy). It returns the revision the
// copy is at.
func (t *Table[T]) Each(prefix string, fn func(key string, v *T)) int64 {
	t.mi.mu.RLock()
	defer t.mi.mu.RUnlock()
	for k, v := range t.items {
		if strings.HasPrefix(k, prefix) {
			fn(k, v)
		}
	}
	return t.mi.rev
}

func (t *Table[T]) claims(key string) bool { return t.claim(key) }

func (t *Table[T]) load(kvs []store.KV) (func(), []refusal) {
	items := make(map[string]*T, len(kvs))
	var refused []refusal
	for _, kv := range kvs {
		if v, err := t.decode(kv); err == nil {
			items[kv.Key] = v
		} else {
			refused = append(refused, refusal{kv.Key, err})
		}
	}
	return func() {
		t.items = items
		if t.OnChange != nil {
			for k, v := range items {
				t.OnChange(k, nil, v)
			}
		}
	}, refused
}

func (t *Table[T]) put(kv store.KV) error {
	v, err := t.decode(kv)
	if err != nil {
		t.del(kv.Key)
		return err
	}
	old := t.items[kv.Key]
	t.items[kv.Key] = v
	if t.OnChange != nil {
		t.OnChange(kv.Key, old, v)
	}
	return nil
}

func (t *Table[T]) del(key string) {
	old, ok := t.items[key]
	if !ok {
		return
	}
	delete(t.items, key)
	if t.OnChange != nil {
		t.OnChange(key, old, nil)
	}
}

// tableOf returns the index of the table that claims key; -1, with why,
// if none does, and -1, nil if the key is ignored.
func (mi *Mirror) tableOf(key string) (int, error) {
	for i, t := range mi.tables {
		if t.claims(key) {
			return i, nil
		}
	}
	for _, p := range mi.ignore {
		if strings.HasPrefix(key, p) {
			return -1, nil
		}
	}
	return -1, fmt.Errorf("the manager keeps no record at %s", key)
}

// Run follows the store until ctx is done.
func (mi *Mirror) Run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		kvs, rev, err := mi.st.List(ctx, mi.prefix)
		if err != nil {
			mi.log.Warn("list failed; retrying", "err", err, "in", backoff)
			sleep(ctx, backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		installs, refused := mi.load(kvs)
		mi.mu.Lock()
		for _, r := range refused {
			mi.refuse(r.key, r.err)
		}
		if mi.OnReset != nil {
			mi.OnReset()
		}
		for _, install := range installs {
			install()
		}
		mi.advance(rev)
		mi.mu.Unlock()
		if first {
			close(mi.ready)
			first = false
		}
		backoff = 50 * time.Millisecond
		err = mi.follow(ctx, rev+1)
		if ctx.Err() == nil {
			mi.log.Info("watch ended; listing again", "err", err)
		}
	}
}

// load sorts kvs by table and decodes them, without the lock.
func (mi *Mirror) load(kvs []store.KV) ([]func(), []refusal) {
	byTable := make([][]store.KV, len(mi.tables))
	var refused []refusal
	for _, kv := range kvs {
		if i, err := mi.tableOf(kv.Key); err != nil {
			refused = append(refused, refusal{kv.Key, err})
		} else if i >= 0 {
			byTable[i] = append(byTable[i], kv)
		}
	}
	installs := make([]func(), len(mi.tables))
	for i, t := range mi.tables {
		var r []refusal
		installs[i], r = t.load(byTable[i])
		refused = append(refused, r...)
	}
	return installs, refused
}

func (mi *Mirror) follow(ctx context.Context, from int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := mi.st.Watch(ctx, mi.prefix, from)
	for batch := range w.C {
		mi.mu.Lock()
		for _, ev := range batch {
			i, err := mi.tableOf(ev.KV.Key)
			switch {
			case err != nil:
				if ev.Type == store.EventPut {
					mi.refuse(ev.KV.Key, err)
				}
			case i < 0:
			case ev.Type == store.EventPut:
				if err := mi.tables[i].put(ev.KV); err != nil {
					mi.refuse(ev.KV.Key, err)
				}
			default:
				mi.tables[i].del(ev.KV.Key)
			}
		}
		mi.advance(batch[len(batch)-1].KV.ModRev)
		mi.mu.Unlock()
	}
	return w.Err()
}

// refuse counts and reports a value left out; mu is held.
func (mi *Mirror) refuse(key string, err error) {
	mi.refused.Add(1)
	if mi.OnRefuse != nil {
		mi.OnRefuse(key, err)
	} else {
		mi.log.Error("value refused", "key", key, "err", err)
	}
}

// Refused is how many values the mirror has refused since it started.
func (mi *Mirror) Refused() int64 { return mi.refused.Load() }

// advance records that the copy is current up to rev; mu is held.
func (mi *Mirror) advance(rev int64) {
	if rev > mi.rev {
		mi.rev = rev
		close(mi.changed)
		mi.changed = make(chan struct{})
	}
}

// WaitRev returns once the copy holds every change up to rev, which
// must be the revision of a change under the prefix (else only a later
// change ends the wait), or ctx's error.
func (mi *Mirror) WaitRev(ctx context.Context, rev int64) error {
	for {
		mi.mu.RLock()
		cur, ch := mi.rev, mi.changed
		mi.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Notify returns a channel closed at the copy's next change.
func (mi *Mirror) Notify() <-chan struct{} {
	mi.mu.RLock()
	defer mi.mu.RUnlock()
	return mi.changed
}

// Ready is closed once the copy has read the store once.
func (mi *Mirror) Ready() <-chan struct{} { return mi.ready }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
