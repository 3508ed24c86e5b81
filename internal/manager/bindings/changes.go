package bindings

import (
	"context"
	"fmt"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/auditlog"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// End ends w's session in class: the binding of scope session in force
// is removed, audited with actor. A binding of another scope is a
// fault.Conflict (it ends as its scope says, or an admin clears it); none
// in force, a fault.NotFound.
func (b *Bindings) End(ctx context.Context, actor audit.Actor, w Workload, class string) (Binding, error) {
	return b.remove(ctx, actor, w, class, "binding.end", func(cur *Binding) error {
		if cur.Scope != Session {
			return fault.New(fault.Conflict, nil, "bindings: %s is bound for its %s, not a session: it ends as its scope says, or an admin clears it",
				Key(w, class), cur.Scope)
		}
		return nil
	})
}

// Clear removes w's binding in class, whatever its scope: for admins
// only (any other actor is a fault.Forbidden), audited with the binding
// removed. None in force is a fault.NotFound.
func (b *Bindings) Clear(ctx context.Context, actor audit.Actor, w Workload, class string) (Binding, error) {
	if actor.Role != api.RoleAdmin {
		return Binding{}, fault.New(fault.Forbidden, nil, "bindings: only an admin may clear a binding; %s %s is %q", actor.Kind, actor.Name, actor.Role)
	}
	return b.remove(ctx, actor, w, class, "binding.clear", func(*Binding) error { return nil })
}

// remove deletes w's binding in class if it is in force and allowed
// says it may go, on condition that it is the binding read.
func (b *Bindings) remove(ctx context.Context, actor audit.Actor, w Workload, class, action string, allowed func(*Binding) error) (Binding, error) {
	key := Key(w, class)
	for range maxAttempts {
		kv, cur, err := b.read(ctx, key)
		if err != nil {
			return Binding{}, err
		}
		if cur == nil || !b.inForce(cur, b.cfg.Now()) {
			return Binding{}, fault.New(fault.NotFound, nil, "bindings: %s is bound to no dataset of %s", w, class)
		}
		if err := allowed(cur); err != nil {
			return Binding{}, err
		}
		_, ok, err := b.cfg.Audit.Commit(ctx, []store.Cond{store.Unchanged(kv)}, []store.Op{store.Delete(key)},
			auditlog.Entry{Actor: actor, Action: action, Object: key, Detail: map[string]any{"binding": cur}})
		if err != nil {
			return Binding{}, fmt.Errorf("bindings: %s %s: %w", action, key, err)
		}
		if ok {
			return *cur, nil
		}
	}
	return Binding{}, fault.New(fault.Unavailable, nil, "bindings: %s %s: the key kept changing; try again", action, key)
}

// Release removes the lifecycle bindings of workload w, whose record
// has left the inventory, and returns them; the caller (the manager)
// calls it only when no host holds a record of w any more. Whichever
// instance made the first access, the binding is the workload's, so it
// goes with the workload's last record and not with one instance: a
// registration again (a restart from a trusted image, with a new
// container id) keeps it. It is the manager's, and audited as such.
func (b *Bindings) Release(ctx context.Context, w Workload) ([]Binding, error) {
	return b.removeAll(ctx, Prefix+w.Namespace+"/"+w.Name+"/", "binding.release", func(cur *Binding) bool {
		return cur.Scope == Lifecycle && cur.Instance.Workload() == w
	})
}

// Sweep removes the bindings that have expired, and returns how many.
// An expired binding binds nothing before it is swept; Sweep only keeps
// the store small.
func (b *Bindings) Sweep(ctx context.Context) (int, error) {
	now := b.cfg.Now()
	gone, err := b.removeAll(ctx, Prefix, "binding.expire", func(cur *Binding) bool { return !b.inForce(cur, now) })
	return len(gone), err
}

// SweepLoop sweeps every interval until ctx ends, and gives what fails
// to onErr: the manager starts it among its loops.
func (b *Bindings) SweepLoop(ctx context.Context, every time.Duration, onErr func(error)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := b.Sweep(ctx); err != nil && ctx.Err() == nil {
			onErr(err)
		}
	}
}

// removeAll deletes each binding under prefix that match selects, one
// Txn each, on condition that it is the binding read; one changed
// meanwhile stays.
func (b *Bindings) removeAll(ctx context.Context, prefix, action string, match func(*Binding) bool) ([]Binding, error) {
	kvs, _, err := b.cfg.Store.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("bindings: list %s: %w", prefix, err)
	}
	var gone []Binding
	for _, kv := range kvs {
		cur, err := decode(kv)
		if err != nil {
			return gone, err
		}
		if !match(cur) {
			continue
		}
		_, ok, err := b.cfg.Audit.Commit(ctx, []store.Cond{store.Unchanged(kv)}, []store.Op{store.Delete(kv.Key)},
			auditlog.Entry{Actor: auditlog.System, Action: action, Object: kv.Key, Detail: map[string]any{"binding": cur}})
		if err != nil {
			return gone, fmt.Errorf("bindings: %s %s: %w", action, kv.Key, err)
		}
		if ok {
			gone = append(gone, *cur)
		}
	}
	return gone, nil
}
