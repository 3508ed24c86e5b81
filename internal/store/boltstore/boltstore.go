// Package boltstore is the embedded store.Store: one bbolt file in the
// manager's process, nothing to install. It is the default for a single
// manager; several managers need etcdstore.
//
// Every Txn is one bolt read-write transaction that updates the keys, adds
// the revision's events to a history bucket and moves the revision in the
// meta bucket, so a process killed at any point leaves the file at the
// previous revision or the new one, never between. The history is kept for
// the last Options.KeepRevs revisions, for watchers to resume from; older
// revisions are compacted as new ones are written, so the file does not grow
// with the number of changes, only with the data.
//
// bbolt locks its file: one process at a time. Within that process, Open of
// the same path returns another handle on the same open file, as a second
// manager would have on a shared etcd.
package boltstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// DefaultKeepRevs is how many revisions of history are kept by default.
const DefaultKeepRevs = 10_000

// Options configure Open. The zero value is the defaults.
type Options struct {
	// KeepRevs is how many of the latest revisions stay in the history
	// for watches to resume from (DefaultKeepRevs if 0). It is a property
	// of the open file: later Opens of the same path in the process share
	// the first one's.
	KeepRevs int
	// Limits bound requests (store.Limits' defaults if zero).
	Limits store.Limits
	// WatchBuffer is how many batches a watcher holds unread
	// (store.DefaultWatchBuffer if 0).
	WatchBuffer int
}

// Store is a handle on a bbolt file. It is safe for concurrent use.
type Store struct {
	b      *backing
	limits store.Limits
	buffer int

	mu       sync.RWMutex // held for reading by every operation, for writing by Close
	isClosed bool
	closed   chan struct{} // closed by Close, to stop the watchers
	watchers sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// backing is one open bolt file, shared by the handles on it.
type backing struct {
	path     string
	db       *bbolt.DB
	keepRevs int
	refs     int // guarded by openMu

	mu      sync.Mutex
	changed chan struct{} // closed and replaced at each new revision
}

var (
	openMu sync.Mutex
	opened = map[string]*backing{}
)

// Open opens (creating if needed) the store at path. Another process
// holding the file makes Open fail after a second.
func Open(path string, opts Options) (*Store, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	openMu.Lock()
	defer openMu.Unlock()
	b := opened[abs]
	if b == nil {
		keep := opts.KeepRevs
		if keep <= 0 {
			keep = DefaultKeepRevs
		}
		if b, err = openBacking(abs, keep); err != nil {
			return nil, err
		}
		opened[abs] = b
	}
	b.refs++
	return &Store{
		b:      b,
		limits: opts.Limits.WithDefaults(),
		buffer: opts.WatchBuffer,
		closed: make(chan struct{}),
	}, nil
}

func openBacking(path string, keepRevs int) (*backing, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: time.Second, FreelistType: bbolt.FreelistMapType})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("store: open %s: in use by another process (bbolt allows one; several managers need the etcd store)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketKeys, bucketHistory} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(metaFormat); {
		case v == nil:
			return meta.Put(metaFormat, revKey(formatVersion))
		case decodeRev(v) != formatVersion:
			return fmt.Errorf("file format %d, this version reads %d", decodeRev(v), formatVersion)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return &backing{path: path, db: db, keepRevs: keepRevs, changed: make(chan struct{})}, nil
}

// Close ends this handle's watches and releases the handle; the file is
// closed with the last handle on it.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.isClosed {
		s.mu.Unlock()
		return nil
	}
	s.isClosed = true
	close(s.closed)
	s.mu.Unlock()
	s.watchers.Wait()

	openMu.Lock()
	defer openMu.Unlock()
	if s.b.refs--; s.b.refs > 0 {
		return nil
	}
	delete(opened, s.b.path)
	if err := s.b.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", s.b.path, err)
	}
	return nil
}

// use takes the handle for one operation; release with s.mu.RUnlock.
func (s *Store) use(op string) error {
	s.mu.RLock()
	if s.isClosed {
		s.mu.RUnlock()
		return fmt.Errorf("store: %s: %w", op, store.ErrClosed)
	}
	return nil
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	if err := s.limits.CheckKey("get", key); err != nil {
		return store.KV{}, err
	}
	if err := s.use("get"); err != nil {
		return store.KV{}, err
	}
	defer s.mu.RUnlock()
	kv := store.KV{Key: key}
	err := s.b.db.View(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketKeys).Get([]byte(key))
		if v == nil {
			return fmt.Errorf("store: get %q: %w", key, store.ErrNotFound)
		}
		var err error
		kv, err = decodeRecord(key, v)
		return err
	})
	return kv, err
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	if err := s.limits.CheckPrefix("list", prefix); err != nil {
		return nil, 0, err
	}
	if err := s.use("list"); err != nil {
		return nil, 0, err
	}
	defer s.mu.RUnlock()
	var kvs []store.KV
	var rev int64
	err := s.b.db.View(func(tx *bbolt.Tx) error {
		rev = decodeRev(tx.Bucket(bucketMeta).Get(metaRev))
		c := tx.Bucket(bucketKeys).Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && len(k) >= len(p) && string(k[:len(p)]) == prefix; k, v = c.Next() {
			kv, err := decodeRecord(string(k), v)
			if err != nil {
				return err
			}
			kvs = append(kvs, kv)
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("store: list %q: %w", prefix, err)
	}
	return kvs, rev, nil
}

// Rev implements store.Store.
func (s *Store) Rev(ctx context.Context) (int64, error) {
	if err := s.use("rev"); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	var rev int64
	err := s.b.db.View(func(tx *bbolt.Tx) error {
		rev = decodeRev(tx.Bucket(bucketMeta).Get(metaRev))
		return nil
	})
	return rev, err
}

// Txn implements store.Store. Writers take turns: bbolt has one writer at
// a time, and each Txn is one fsynced bolt transaction.
func (s *Store) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (rev int64, ok bool, err error) {
	if err := s.limits.CheckTxn(conds, ops); err != nil {
		return 0, false, err
	}
	if err := ctx.Err(); err != nil {
		return 0, false, fmt.Errorf("store: txn: %w", err)
	}
	if err := s.use("txn"); err != nil {
		return 0, false, err
	}
	defer s.mu.RUnlock()
	changed := false
	err = s.b.db.Update(func(tx *bbolt.Tx) error {
		meta, keys := tx.Bucket(bucketMeta), tx.Bucket(bucketKeys)
		rev = decodeRev(meta.Get(metaRev))
		for _, c := range conds {
			var modRev int64
			if v := keys.Get([]byte(c.Key)); v != nil {
				kv, err := decodeRecord(c.Key, v)
				if err != nil {
					return err
				}
				modRev = kv.ModRev
			}
			if modRev != c.ModRev {
				return nil
			}
		}
		ok = true
		next := rev + 1
		var evs []store.Event
		for _, op := range ops {
			k := []byte(op.Key)
			old := keys.Get(k)
			if op.Delete {
				if old == nil {
					continue
				}
				if err := keys.Delete(k); err != nil {
					return err
				}
				evs = append(evs, store.Event{Type: store.EventDelete, KV: store.KV{Key: op.Key, ModRev: next}})
				continue
			}
			createRev := next
			if old != nil {
				kv, err := decodeRecord(op.Key, old)
				if err != nil {
					return err
				}
				createRev = kv.CreateRev
			}
			if err := keys.Put(k, encodeRecord(createRev, next, op.Value)); err != nil {
				return err
			}
			evs = append(evs, store.Event{Type: store.EventPut, KV: store.KV{Key: op.Key, Value: op.Value, CreateRev: createRev, ModRev: next}})
		}
		if len(evs) == 0 {
			return nil
		}
		if err := tx.Bucket(bucketHistory).Put(revKey(next), encodeEvents(evs)); err != nil {
			return err
		}
		if err := meta.Put(metaRev, revKey(next)); err != nil {
			return err
		}
		rev, changed = next, true
		return s.b.trimHistory(tx, next)
	})
	if err != nil {
		return 0, false, fmt.Errorf("store: txn: %w", err)
	}
	if changed {
		s.b.notify()
	}
	return rev, ok, nil
}

// trimHistory compacts the history so that it keeps the last keepRevs
// revisions up to rev. Called at every revision it drops one entry, so its
// cost is spread evenly over the writes.
func (b *backing) trimHistory(tx *bbolt.Tx, rev int64) error {
	if to := rev - int64(b.keepRevs); to > decodeRev(tx.Bucket(bucketMeta).Get(metaCompacted)) {
		return compactTx(tx, to)
	}
	return nil
}

// compactTx drops the history of revisions <= to.
func compactTx(tx *bbolt.Tx, to int64) error {
	h := tx.Bucket(bucketHistory)
	c := h.Cursor()
	for k, _ := c.First(); k != nil && decodeRev(k) <= to; k, _ = c.First() {
		if err := h.Delete(append([]byte{}, k...)); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketMeta).Put(metaCompacted, revKey(to))
}

// Compact implements store.Store.
func (s *Store) Compact(ctx context.Context, rev int64) error {
	if err := s.use("compact"); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	err := s.b.db.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if cur := decodeRev(meta.Get(metaRev)); rev > cur {
			return fmt.Errorf("revision %d, the current revision is %d: %w", rev, cur, store.ErrFutureRev)
		}
		if rev <= decodeRev(meta.Get(metaCompacted)) {
			return nil
		}
		return compactTx(tx, rev)
	})
	if err != nil {
		return fmt.Errorf("store: compact: %w", err)
	}
	return nil
}

// notify wakes the watchers of every handle after a new revision.
func (b *backing) notify() {
	b.mu.Lock()
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

// changes returns a channel closed at the next new revision.
func (b *backing) changes() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

// Limits returns the limits this store holds requests to.
func (s *Store) Limits() store.Limits { return s.limits }
