package manager

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// mirror is an in-memory copy of the keys under one prefix of the store,
// kept current by a watch: list, then follow, and list again when the
// watch ends. Reads that decide nothing (lists, authentication) use it;
// writes that must not race still read the store and commit with
// conditions. Values are decoded once, when they arrive.
//
// One prefix holds records of several kinds (auth/ holds tokens, join
// tokens and certificates), so the copy holds them as any; they are read
// only through lookup and eachOf, which check each value's type. A value
// of another type than the reader wants is skipped, counted and reported
// (wrongType), never asserted: a record the decoder and a reader
// disagree on must not panic a background loop and take the manager
// down.
type mirror struct {
	st     store.Store
	prefix string
	decode func(kv store.KV) (any, error)
	log    *slog.Logger
	// onChange, if set, sees every change (old or new nil for a put of a
	// new key or a delete), and reset every new list, under the lock.
	onChange func(key string, old, new any)
	onReset  func()
	// onWrong, if set, reports a value of another type than its reader
	// wants (the manager raises an alert, once per key, counting
	// repeats); it must not read the mirror.
	onWrong func(key, msg string)
	wrong   atomic.Int64 // values skipped for their type, every read

	mu      sync.RWMutex
	items   map[string]any
	rev     int64
	changed chan struct{} // closed and replaced when rev moves
	ready   chan struct{} // closed after the first list
}

func newMirror(st store.Store, prefix string, log *slog.Logger, decode func(store.KV) (any, error)) *mirror {
	return &mirror{st: st, prefix: prefix, decode: decode, log: log.With("mirror", prefix),
		items: map[string]any{}, changed: make(chan struct{}), ready: make(chan struct{})}
}

// run follows the store until ctx is done.
func (mi *mirror) run(ctx context.Context) {
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
		items := make(map[string]any, len(kvs))
		for _, kv := range kvs {
			if v, err := mi.decode(kv); err == nil {
				items[kv.Key] = v
			} else {
				mi.log.Warn("undecodable value skipped", "key", kv.Key, "err", err)
			}
		}
		mi.mu.Lock()
		mi.items = items
		if mi.onReset != nil {
			mi.onReset()
			for k, v := range items {
				mi.onChange(k, nil, v)
			}
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

func (mi *mirror) follow(ctx context.Context, from int64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := mi.st.Watch(ctx, mi.prefix, from)
	for batch := range w.C {
		mi.mu.Lock()
		for _, ev := range batch {
			old := mi.items[ev.KV.Key]
			var v any
			if ev.Type == store.EventPut {
				var err error
				if v, err = mi.decode(ev.KV); err != nil {
					mi.log.Warn("undecodable value skipped", "key", ev.KV.Key, "err", err)
					v = nil
				}
			}
			if v == nil {
				delete(mi.items, ev.KV.Key)
			} else {
				mi.items[ev.KV.Key] = v
			}
			if mi.onChange != nil && (old != nil || v != nil) {
				mi.onChange(ev.KV.Key, old, v)
			}
		}
		mi.advance(batch[len(batch)-1].KV.ModRev)
		mi.mu.Unlock()
	}
	return w.Err()
}

// advance records that the copy is current up to rev; mu is held.
func (mi *mirror) advance(rev int64) {
	if rev > mi.rev {
		mi.rev = rev
		close(mi.changed)
		mi.changed = make(chan struct{})
	}
}

// waitRev returns once the copy holds every change up to rev, which
// must be the revision of a change under the prefix (else only a later
// change ends the wait).
func (mi *mirror) waitRev(ctx context.Context, rev int64) error {
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

// lookup returns the value of key if it is a T.
func lookup[T any](mi *mirror, key string) (T, bool) {
	mi.mu.RLock()
	v, found := mi.items[key]
	mi.mu.RUnlock()
	t, ok := v.(T)
	if found && !ok {
		mi.wrongType(key, v, t)
	}
	return t, ok
}

// eachOf calls fn for every T under prefix (which begins with the
// mirror's), in no particular order, holding the read lock; values of
// another type are skipped. It returns the revision the copy is at.
func eachOf[T any](mi *mirror, prefix string, fn func(key string, v T)) int64 {
	mi.mu.RLock()
	defer mi.mu.RUnlock()
	for k, v := range mi.items {
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			if t, ok := v.(T); ok {
				fn(k, t)
			} else {
				mi.wrongType(k, v, t)
			}
		}
	}
	return mi.rev
}

// wrongType counts and reports a value at key that is not of the type of
// want, which a reader skipped.
func (mi *mirror) wrongType(key string, v, want any) {
	mi.wrong.Add(1)
	msg := fmt.Sprintf("the value is a %T where a %T belongs; readers skip it", v, want)
	if mi.onWrong != nil {
		mi.onWrong(key, msg)
	} else {
		mi.log.Error("value of another type skipped", "key", key, "msg", msg)
	}
}

// notify returns a channel closed at the copy's next change.
func (mi *mirror) notify() <-chan struct{} {
	mi.mu.RLock()
	defer mi.mu.RUnlock()
	return mi.changed
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
