// Package bindings holds the bindings of the dynamic (Brewer–Nash) walls:
// a workload that has reached one dataset of a conflict class is bound to
// it, and its connections to the class's other datasets are denied for the
// class's scope.
//
// # One winner
//
// A workload has at most one binding per class, under one store key
// (Key). The first access writes it on condition that the key is absent
// (or holds a binding no longer in force), so that whatever the races —
// goroutines, hosts, managers over one etcd — exactly one dataset wins,
// and every Bind returns that one. A Bind that loses reads the winner and
// returns it; the caller decides by comparing datasets (Check does).
//
// # What is bound, and for how long
//
// The binding's subject is the workload, namespace/name, wherever it
// runs: a second copy of it on another host is bound by the first's
// binding, never free to reach the other side. The instance (host and
// container id) that made the first access is recorded. The scope
// lifecycle ends with the workload: Release, called when the workload's
// last record leaves the inventory, removes its lifecycle bindings; a
// registration again (a restart, with a new container id) keeps them.
// The other scopes: permanent (until an admin clears it),
// window (it expires Window after the first access, by the clock of the
// manager that wrote it) and session (until End, or Window when set).
// A binding keeps the scope it was written with when the class changes.
//
// # Changes
//
// Every change is committed through the audit log's Committer in the
// same transaction as its entry: binding.bind, binding.end,
// binding.release, binding.expire (Sweep) and binding.clear (admins
// only). Reads go to the store, which is linearizable in both
// implementations; nothing is cached, so a manager restarted over the
// store, or another manager, sees the same bindings. Errors are
// internal/fault errors; a store that cannot answer wraps
// store.ErrUnavailable, and a caller deciding a connection denies it.
package bindings

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/auditlog"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Prefix is where bindings are kept: Prefix + namespace/name/class →
// Binding as JSON.
const Prefix = "bindings/"

// maxAttempts bounds the compare-and-sets of one change. Each lost one
// means another caller changed the key, which for a Bind means a winner
// to return: a second loss in a row is already rare.
const maxAttempts = 20

// Scopes of a conflict class (policy.ConflictClass.Scope).
const (
	Lifecycle = "lifecycle"
	Permanent = "permanent"
	Window    = "window"
	Session   = "session"
)

// Workload names a workload: the subject of a binding.
type Workload struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (w Workload) String() string { return w.Namespace + "/" + w.Name }

// Instance is one run of a workload: the host that reports it, its name,
// and the runtime's container id (empty when the runtime gives none).
// Two instances are the same when every field is.
type Instance struct {
	Host        string `json:"host"`
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	ContainerID string `json:"containerID,omitempty"`
}

// Workload returns the workload that in is an instance of.
func (in Instance) Workload() Workload { return Workload{Namespace: in.Namespace, Name: in.Name} }

// Binding binds a workload to one dataset of a class.
type Binding struct {
	Class    string    `json:"class"`
	Dataset  string    `json:"dataset"`
	Instance Instance  `json:"instance"` // the instance whose access bound it
	Scope    string    `json:"scope"`
	Since    time.Time `json:"since"`
	Expires  time.Time `json:"expires,omitzero"` // zero: it does not expire
	// Rev is the store revision it was written at (not stored).
	Rev int64 `json:"-"`
}

// Key is the binding's store key.
func (b Binding) Key() string { return Key(b.Instance.Workload(), b.Class) }

// Key is the store key of workload w's binding in class.
func Key(w Workload, class string) string { return Prefix + w.Namespace + "/" + w.Name + "/" + class }

// Outcome is what a binding says of a connection to a dataset.
type Outcome uint8

// Outcomes of Check.
const (
	Unbound Outcome = iota // no binding in force: the first access decides
	Allowed                // bound to this dataset
	Denied                 // bound to another dataset of the class
)

func (o Outcome) String() string {
	switch o {
	case Unbound:
		return "unbound"
	case Allowed:
		return "allowed"
	case Denied:
		return "denied"
	}
	return fmt.Sprintf("Outcome(%d)", uint8(o))
}

// Verdict is Check's answer: the outcome and the binding behind it (nil
// when unbound), for explain.
type Verdict struct {
	Outcome Outcome
	Binding *Binding
}

// Config is what Bindings needs. Store and Audit are required.
type Config struct {
	Store store.Store
	Audit auditlog.Committer
	Now   func() time.Time // default time.Now
}

// Bindings reads and writes bindings. Its methods are safe for
// concurrent use, as are several Bindings over one store.
type Bindings struct {
	cfg Config
}

// New returns Bindings over cfg.Store.
func New(cfg Config) *Bindings {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Bindings{cfg: cfg}
}

// Bind binds in's workload to dataset of class unless a binding is in
// force, and returns the binding in force: this one, or the one written
// first. The dataset must be one the class lists.
func (b *Bindings) Bind(ctx context.Context, in Instance, class *policy.ConflictClass, dataset string) (Binding, error) {
	if err := checkAccess(in, class, dataset); err != nil {
		return Binding{}, err
	}
	key := Key(in.Workload(), class.Name)
	for range maxAttempts {
		kv, cur, err := b.read(ctx, key)
		if err != nil {
			return Binding{}, err
		}
		now := b.cfg.Now()
		if cur != nil && b.inForce(cur, now) {
			return *cur, nil
		}
		nb := Binding{Class: class.Name, Dataset: dataset, Instance: in, Scope: class.Scope, Since: now.UTC()}
		if class.Window > 0 && (class.Scope == Window || class.Scope == Session) {
			nb.Expires = nb.Since.Add(class.Window)
		}
		value, err := json.Marshal(nb)
		if err != nil {
			return Binding{}, fmt.Errorf("bindings: encode %s: %w", key, err)
		}
		detail := map[string]any{"binding": nb}
		if cur != nil {
			detail["replaces"] = cur // expired
		}
		rev, ok, err := b.cfg.Audit.Commit(ctx, []store.Cond{store.Unchanged(kv)}, []store.Op{store.Put(key, value)},
			auditlog.Entry{Actor: auditlog.System, Action: "binding.bind", Object: key, Detail: detail})
		if err != nil {
			return Binding{}, fmt.Errorf("bindings: bind %s: %w", key, err)
		}
		if ok {
			nb.Rev = rev
			return nb, nil
		}
		// Another caller wrote the key: read the winner.
	}
	return Binding{}, fault.New(fault.Unavailable, nil, "bindings: bind %s: the key kept changing; try again", key)
}

// Check says whether in's workload may reach dataset of class: allowed
// or denied by the binding in force, or unbound.
func (b *Bindings) Check(ctx context.Context, in Instance, class *policy.ConflictClass, dataset string) (Verdict, error) {
	if err := checkAccess(in, class, dataset); err != nil {
		return Verdict{}, err
	}
	_, cur, err := b.read(ctx, Key(in.Workload(), class.Name))
	if err != nil {
		return Verdict{}, err
	}
	if cur == nil || !b.inForce(cur, b.cfg.Now()) {
		return Verdict{Outcome: Unbound}, nil
	}
	if cur.Dataset == dataset {
		return Verdict{Outcome: Allowed, Binding: cur}, nil
	}
	return Verdict{Outcome: Denied, Binding: cur}, nil
}

// List returns the bindings in force, in key order.
func (b *Bindings) List(ctx context.Context) ([]Binding, error) {
	return b.list(ctx, Prefix)
}

// Of returns the bindings in force of workload w, by class.
func (b *Bindings) Of(ctx context.Context, w Workload) ([]Binding, error) {
	return b.list(ctx, Prefix+w.Namespace+"/"+w.Name+"/")
}

func (b *Bindings) list(ctx context.Context, prefix string) ([]Binding, error) {
	kvs, _, err := b.cfg.Store.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("bindings: list %s: %w", prefix, err)
	}
	now := b.cfg.Now()
	var out []Binding
	for _, kv := range kvs {
		cur, err := decode(kv)
		if err != nil {
			return nil, err
		}
		if b.inForce(cur, now) {
			out = append(out, *cur)
		}
	}
	return out, nil
}

// inForce reports whether cur binds at now.
func (b *Bindings) inForce(cur *Binding, now time.Time) bool {
	return cur.Expires.IsZero() || now.Before(cur.Expires)
}

// read returns key as read (for the condition of a change) and its
// binding, nil when there is none.
func (b *Bindings) read(ctx context.Context, key string) (store.KV, *Binding, error) {
	kv, err := b.cfg.Store.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return kv, nil, nil
	}
	if err != nil {
		return kv, nil, fmt.Errorf("bindings: read %s: %w", key, err)
	}
	cur, err := decode(kv)
	return kv, cur, err
}

func decode(kv store.KV) (*Binding, error) {
	var cur Binding
	if err := json.Unmarshal(kv.Value, &cur); err != nil {
		return nil, fault.New(fault.Internal, nil, "bindings: %s holds no binding: %w", kv.Key, err)
	}
	cur.Rev = kv.ModRev
	return &cur, nil
}

// checkAccess refuses an instance without its names, or a dataset the
// class does not list.
func checkAccess(in Instance, class *policy.ConflictClass, dataset string) error {
	for _, f := range []struct{ name, v string }{{"host", in.Host}, {"namespace", in.Namespace}, {"name", in.Name}} {
		if f.v == "" || strings.Contains(f.v, "/") {
			return fault.New(fault.Invalid, nil, "bindings: the workload's %s is %q; give one without '/'", f.name, f.v)
		}
	}
	if class == nil || class.Name == "" {
		return fault.New(fault.Invalid, nil, "bindings: no conflict class named")
	}
	names := make([]string, 0, len(class.Datasets))
	for _, d := range class.Datasets {
		if d.Name == dataset {
			return nil
		}
		names = append(names, d.Name)
	}
	return fault.New(fault.Invalid, nil, "bindings: conflict class %s has no dataset %q; valid: %s",
		class.Name, dataset, strings.Join(names, ", "))
}
