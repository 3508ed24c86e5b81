// Package auditlog is the manager's side of the hash-chained audit log
// (internal/audit holds the chain itself): it commits every change in the
// same store transaction as its entry (Log.Commit), keeps the log's head
// anchored outside the store and signs it (head.go), verifies the log
// against every anchor it has, and audits refused requests at a bounded
// rate (refusals.go).
//
// A package that changes the store on the manager's behalf takes a
// Committer, so that its changes are audited like every other.
package auditlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Committer commits a change with its audit entry, at one revision.
// Commit is safe for concurrent use; ok is false, with no error, when one
// of conds no longer holds (nothing was written).
type Committer interface {
	Commit(ctx context.Context, conds []store.Cond, ops []store.Op, e Entry) (rev int64, ok bool, err error)
}

// Entry is what a change records in the audit log.
type Entry struct {
	Actor  audit.Actor
	Action string
	Object string
	Detail any // marshalled to JSON, or nil
}

// System is the manager acting on its own.
var System = audit.Actor{Kind: "system", Name: "manager"}

// Config configures a Log. Store is required.
type Config struct {
	Store store.Store
	// Dir is the data directory, where the head this manager last wrote
	// is kept (HeadFile).
	Dir string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger is where the signed head is logged, now and then, and what
	// fails outside a request (default slog.Default()).
	Logger *slog.Logger
	// Alert raises an alert (the manager's GET /v1/alerts): a head file
	// that does not verify, a log that does not.
	Alert func(kind, key, msg string)
}

// Log is the manager's audit log. Its methods are safe for concurrent use.
type Log struct {
	cfg      Config
	mu       sync.Mutex // serializes this manager's audited commits
	heads    heads
	refusals refusals
}

var _ Committer = (*Log)(nil)

// New makes a Log. LoadHead gives it the key that signs heads, and the
// anchor this manager kept.
func New(cfg Config) *Log {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Alert == nil {
		cfg.Alert = func(string, string, string) {}
	}
	return &Log{cfg: cfg}
}

// Commit commits conds and ops with the audit entry for them, at one
// revision. When the Txn fails only because another entry was appended
// meanwhile, it chains onto that one and tries again; ok is false when
// one of conds no longer holds. A change too large for one transaction
// is a fault.TooLarge; a log that keeps moving, fault.Unavailable.
func (l *Log) Commit(ctx context.Context, conds []store.Cond, ops []store.Op, e Entry) (int64, bool, error) {
	var detail json.RawMessage
	if e.Detail != nil {
		d, err := json.Marshal(e.Detail)
		if err != nil {
			return 0, false, fmt.Errorf("manager: audit detail: %w", err)
		}
		detail = d
	}
	// One writer at a time in this process: the chain's head is a single
	// key, and local writers queueing here do not waste Txns on conflicts.
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.cfg.Store
	for attempt := 0; attempt < 20; attempt++ {
		head, err := audit.ReadHead(ctx, st)
		if err != nil {
			return 0, false, err
		}
		sealed, aconds, aops, err := audit.Append(head, audit.Entry{Time: l.cfg.Now(), Actor: e.Actor,
			Action: e.Action, Object: e.Object, Detail: detail})
		if err != nil {
			return 0, false, err
		}
		allConds := append(append([]store.Cond(nil), conds...), aconds...)
		allOps := append(append([]store.Op(nil), ops...), aops...)
		rev, ok, err := st.Txn(ctx, allConds, allOps)
		if err != nil {
			if errors.Is(err, store.ErrTooLarge) {
				return 0, false, fault.New(fault.TooLarge, nil, "the change is too large for one store transaction: %w", err)
			}
			return 0, false, fmt.Errorf("manager: commit %s: %w", e.Action, err)
		}
		if ok {
			l.heads.note(audit.Head{Seq: sealed.Seq, Hash: sealed.Hash})
			return rev, true, nil
		}
		if held, err := l.holds(ctx, conds); err != nil || !held {
			return 0, false, err
		}
	}
	return 0, false, fault.New(fault.Unavailable, nil, "the audit log is too busy; try again")
}

// holds reports whether every condition still holds.
func (l *Log) holds(ctx context.Context, conds []store.Cond) (bool, error) {
	for _, c := range conds {
		kv, err := l.cfg.Store.Get(ctx, c.Key)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return false, fmt.Errorf("manager: read %s: %w", c.Key, err)
		}
		if kv.ModRev != c.ModRev {
			return false, nil
		}
	}
	return true, nil
}
