// Package etcdstore is the store.Store over an etcd cluster, for several
// managers that keep no state of their own: any of them may serve any
// request, and each sees the others' writes through Watch.
//
// It maps the interface directly onto etcd: Get and List are etcd ranges
// (linearizable), Txn is an etcd Txn comparing ModRevision, Watch is an etcd
// watch, and revisions are etcd's. All keys live under a prefix per
// Bulkhead cluster ("/bulkhead/prod/"), so that several clusters may share
// an etcd; their revisions then interleave, which store allows. Compaction
// is etcd's and applies to the whole etcd: leave it to etcd's
// --auto-compaction-* flags where an etcd is shared.
package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// MaxPrefixBytes bounds Options.Prefix, so that the store's limits still
// fit etcd's request limit with the prefix added to every key.
const MaxPrefixBytes = 256

// listPage is how many keys List reads per etcd request.
const listPage = 1000

// Options configure New.
type Options struct {
	// Prefix is the Bulkhead cluster's key space in etcd, such as
	// "/bulkhead/prod/": non-empty, ending in "/", and not a prefix of
	// another cluster's.
	Prefix string
	// Limits bound requests (store.Limits' defaults if zero). Larger
	// limits need etcd's --max-txn-ops and --max-request-bytes raised.
	Limits store.Limits
	// WatchBuffer is how many batches a watcher holds unread before it is
	// cut off (store.DefaultWatchBuffer if 0).
	WatchBuffer int
}

// Store is a store.Store over an etcd client. It is safe for concurrent
// use, and any number of Stores, in any number of processes, may share one
// etcd and prefix.
type Store struct {
	cli    *clientv3.Client
	prefix string
	limits store.Limits
	buffer int

	isClosed atomic.Bool
	ctx      context.Context // canceled by Close, to end the watches
	cancel   context.CancelFunc
	watchers sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// New returns a Store over cli. The caller keeps ownership of cli: Close
// ends the Store's watches but leaves cli open.
func New(cli *clientv3.Client, opts Options) (*Store, error) {
	p := opts.Prefix
	if p == "" || !strings.HasSuffix(p, "/") || len(p) > MaxPrefixBytes {
		return nil, fmt.Errorf("store: etcd prefix %q: want a non-empty prefix ending in \"/\", at most %d bytes, such as \"/bulkhead/prod/\": %w",
			p, MaxPrefixBytes, store.ErrInvalid)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Store{
		cli:    cli,
		prefix: p,
		limits: opts.Limits.WithDefaults(),
		buffer: opts.WatchBuffer,
		ctx:    ctx,
		cancel: cancel,
	}, nil
}

// Close ends the watches of this Store; operations under way finish, and
// later ones fail with ErrClosed.
func (s *Store) Close() error {
	if s.isClosed.Swap(true) {
		return nil
	}
	s.cancel()
	s.watchers.Wait()
	return nil
}

func (s *Store) checkOpen(op string) error {
	if s.isClosed.Load() {
		return fmt.Errorf("store: %s: %w", op, store.ErrClosed)
	}
	return nil
}

// etcdErr turns an etcd error into the store's.
func etcdErr(op string, err error) error {
	switch {
	case errors.Is(err, rpctypes.ErrTooManyOps), errors.Is(err, rpctypes.ErrRequestTooLarge):
		return fmt.Errorf("store: %s: %v: etcd's limits are below the store's (raise --max-txn-ops or --max-request-bytes, or lower store.Limits): %w",
			op, err, store.ErrTooLarge)
	case errors.Is(err, rpctypes.ErrFutureRev):
		return fmt.Errorf("store: %s: %w", op, store.ErrFutureRev)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

func (s *Store) kv(k *mvccpb.KeyValue) store.KV {
	v := k.Value
	if v == nil {
		v = []byte{}
	}
	return store.KV{
		Key:       strings.TrimPrefix(string(k.Key), s.prefix),
		Value:     v,
		CreateRev: k.CreateRevision,
		ModRev:    k.ModRevision,
	}
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	if err := s.limits.CheckKey("get", key); err != nil {
		return store.KV{}, err
	}
	if err := s.checkOpen("get"); err != nil {
		return store.KV{}, err
	}
	resp, err := s.cli.Get(ctx, s.prefix+key)
	if err != nil {
		return store.KV{}, etcdErr(fmt.Sprintf("get %q", key), err)
	}
	if len(resp.Kvs) == 0 {
		return store.KV{Key: key}, fmt.Errorf("store: get %q: %w", key, store.ErrNotFound)
	}
	return s.kv(resp.Kvs[0]), nil
}

// List implements store.Store. It reads in pages, all at the revision of
// the first, so that a large list is one snapshot without one huge
// response; a compaction between pages makes it start again.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	if err := s.limits.CheckPrefix("list", prefix); err != nil {
		return nil, 0, err
	}
	if err := s.checkOpen("list"); err != nil {
		return nil, 0, err
	}
	for attempt := 0; ; attempt++ {
		kvs, rev, err := s.list(ctx, prefix)
		if errors.Is(err, rpctypes.ErrCompacted) && attempt < 3 {
			continue
		}
		if err != nil {
			return nil, 0, etcdErr(fmt.Sprintf("list %q", prefix), err)
		}
		return kvs, rev, nil
	}
}

func (s *Store) list(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	from, end := s.prefix+prefix, clientv3.GetPrefixRangeEnd(s.prefix+prefix)
	var kvs []store.KV
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, k := range resp.Kvs {
			kvs = append(kvs, s.kv(k))
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return kvs, rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Rev implements store.Store. It is the etcd's revision, which counts the
// changes of every cluster sharing it.
func (s *Store) Rev(ctx context.Context) (int64, error) {
	if err := s.checkOpen("rev"); err != nil {
		return 0, err
	}
	resp, err := s.cli.Get(ctx, s.prefix, clientv3.WithCountOnly())
	if err != nil {
		return 0, etcdErr("rev", err)
	}
	return resp.Header.Revision, nil
}

// Txn implements store.Store.
func (s *Store) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, bool, error) {
	if err := s.limits.CheckTxn(conds, ops); err != nil {
		return 0, false, err
	}
	if err := s.checkOpen("txn"); err != nil {
		return 0, false, err
	}
	cmps := make([]clientv3.Cmp, len(conds))
	for i, c := range conds {
		cmps[i] = clientv3.Compare(clientv3.ModRevision(s.prefix+c.Key), "=", c.ModRev)
	}
	thens := make([]clientv3.Op, len(ops))
	for i, op := range ops {
		if op.Delete {
			thens[i] = clientv3.OpDelete(s.prefix + op.Key)
		} else {
			thens[i] = clientv3.OpPut(s.prefix+op.Key, string(op.Value))
		}
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(thens...).Commit()
	if err != nil {
		return 0, false, etcdErr("txn", err)
	}
	return resp.Header.Revision, resp.Succeeded, nil
}

// Compact implements store.Store with etcd's compaction, which drops the
// history of every cluster sharing the etcd.
func (s *Store) Compact(ctx context.Context, rev int64) error {
	if err := s.checkOpen("compact"); err != nil {
		return err
	}
	if rev <= 0 {
		return nil
	}
	_, err := s.cli.Compact(ctx, rev)
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return nil
	case errors.Is(err, rpctypes.ErrFutureRev):
		cur, _ := s.Rev(ctx)
		return fmt.Errorf("store: compact: revision %d, the current revision is %d: %w", rev, cur, store.ErrFutureRev)
	case err != nil:
		return etcdErr("compact", err)
	}
	return nil
}

// Limits returns the limits this store holds requests to.
func (s *Store) Limits() store.Limits { return s.limits }
