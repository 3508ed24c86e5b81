// Package store is where the manager keeps every resource: a revisioned
// key-value store with the semantics of etcd's, behind one interface with
// two implementations that pass one conformance suite (storetest):
// boltstore, embedded in the manager's process (the default, single node),
// and etcdstore, over an etcd cluster (several managers, none holding state).
//
// # Model
//
// Keys are strings, ordered bytewise; values are opaque bytes. The store
// has one revision counter. Every Txn that changes something commits all of
// its changes at exactly one new revision, higher than every earlier one;
// a Txn whose conditions fail, or that changes nothing, creates none.
// Revisions increase but need not be consecutive (an etcd shared by several
// Bulkhead clusters numbers the changes of all of them).
//
// Each key carries the revision that created it (CreateRev) and the one that
// last changed it (ModRev). A condition on a key's ModRev, where 0 means
// "does not exist", is all that compare-and-set needs: read, then write on
// condition that nothing changed in between, and retry otherwise.
//
// # Reading and following
//
// Get and List read the latest state; List returns the revision of its
// snapshot, so that a reader can Watch from the next revision and miss
// nothing: list, then follow. Watch delivers every change after a given
// revision in revision order, each revision whole in one batch. Old history
// is dropped by compaction; watching from before what is kept fails with a
// *CompactedError (ErrCompacted), after which the reader lists again.
//
// # Limits
//
// Keys, values and transactions are bounded (Limits); a request over a
// limit fails with ErrTooLarge before anything is written, and the message
// names the limit and the size that would be valid.
//
// # When the store cannot answer
//
// A store that cannot answer now (etcd without a leader or a quorum, no
// member reachable) fails each call within a bound with an error wrapping
// ErrUnavailable and the cause, rather than waiting for it to come back;
// Watch is not bounded. A Txn that failed so may still have committed
// when the error says so: read before trying again.
//
// # Concurrency
//
// Every method of every implementation is safe for concurrent use, from any
// number of goroutines and, for etcdstore, any number of processes. Errors
// wrap the sentinels below; test them with errors.Is.
package store

import (
	"context"
	"fmt"
)

// Store is a revisioned key-value store. All methods are safe for concurrent
// use. After Close every method fails with ErrClosed.
type Store interface {
	// Get returns the key's current value. If the key does not exist the
	// error wraps ErrNotFound and the KV has Key set and ModRev 0, so that
	// Unchanged(kv) is the condition "still does not exist".
	Get(ctx context.Context, key string) (KV, error)

	// List returns every key that begins with prefix, in key order, as one
	// consistent snapshot, and the revision of that snapshot. "" lists all.
	List(ctx context.Context, prefix string) (kvs []KV, rev int64, err error)

	// Txn applies ops, in order, if every condition holds, all at once or
	// not at all. It returns ok=false and changes nothing when a condition
	// fails. rev is the revision the changes were committed at; when a
	// condition fails or nothing changed (no ops, or only deletes of absent
	// keys) it is the current revision. A key may appear at most once in
	// ops; the error for anything else wraps ErrInvalid or ErrTooLarge.
	Txn(ctx context.Context, conds []Cond, ops []Op) (rev int64, ok bool, err error)

	// Watch follows the keys that begin with prefix: every change at a
	// revision >= fromRev, in revision order. fromRev 0 means the changes
	// after the revision current when Watch is called. The watch runs until ctx is canceled, the store is closed, or
	// it fails: then Watcher.C is closed and Watcher.Err says why. A watch
	// from a compacted revision fails with a *CompactedError. A watcher
	// that falls behind never holds up writers: it is cut off with an error
	// wrapping ErrSlowWatcher or ErrCompacted, never skipped, and may resume
	// from the revision after the last one it received.
	Watch(ctx context.Context, prefix string, fromRev int64) *Watcher

	// Compact drops the history of revisions <= rev: afterwards Watch
	// accepts fromRev > rev only. The current state is kept whole.
	// Compacting to or below an earlier compaction does nothing; beyond the
	// current revision it fails with ErrFutureRev.
	Compact(ctx context.Context, rev int64) error

	// Rev returns the current revision.
	Rev(ctx context.Context) (int64, error)

	// Close ends every watch of this handle with ErrClosed and releases
	// the handle. It is idempotent.
	Close() error
}

// KV is one key's value and revisions.
type KV struct {
	Key       string
	Value     []byte
	CreateRev int64 // revision that created the key (after its last delete)
	ModRev    int64 // revision of its last change; 0: the key does not exist
}

// Cond is a Txn condition: the key's ModRev equals ModRev, where 0 means
// the key must not exist.
type Cond struct {
	Key    string
	ModRev int64
}

// Absent is the condition that key does not exist.
func Absent(key string) Cond { return Cond{Key: key} }

// Unchanged is the condition that kv's key is still as read: same ModRev,
// or still absent when kv.ModRev is 0.
func Unchanged(kv KV) Cond { return Cond{Key: kv.Key, ModRev: kv.ModRev} }

// Op is one change in a Txn: a put of Value, or a delete when Delete is
// set. Deleting an absent key is not an error and changes nothing.
type Op struct {
	Key    string
	Value  []byte
	Delete bool
}

// Put returns the Op that sets key to value.
func Put(key string, value []byte) Op { return Op{Key: key, Value: value} }

// Delete returns the Op that removes key.
func Delete(key string) Op { return Op{Key: key, Delete: true} }

// EventType says whether an Event is a put or a delete.
type EventType uint8

// Event types.
const (
	EventPut EventType = iota + 1
	EventDelete
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	}
	return fmt.Sprintf("EventType(%d)", uint8(t))
}

// Event is one change seen by a Watch. KV.ModRev is the revision of the
// change. For a delete, KV has only Key and ModRev.
type Event struct {
	Type EventType
	KV   KV
}
