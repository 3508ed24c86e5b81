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
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// MaxPrefixBytes bounds Options.Prefix, so that the store's limits still
// fit etcd's request limit with the prefix added to every key.
const MaxPrefixBytes = 256

// listPage is how many keys List reads per etcd request.
const listPage = 1000

// DefaultTimeout bounds one call to etcd (one page of a List): long
// enough for a leader election (etcd's default election timeout is 1 s)
// and a slow disk, short enough that a client waiting on a cluster without
// quorum is told so within seconds.
const DefaultTimeout = 5 * time.Second

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
	// Timeout bounds every call but Watch (DefaultTimeout if 0): past it
	// the call fails with store.ErrUnavailable.
	Timeout time.Duration
}

// Store is a store.Store over an etcd client. It is safe for concurrent
// use, and any number of Stores, in any number of processes, may share one
// etcd and prefix.
type Store struct {
	cli     *clientv3.Client
	prefix  string
	limits  store.Limits
	buffer  int
	timeout time.Duration
	owned   *clientv3.Client // closed by Close: the client Open made

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
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Store{
		cli:     cli,
		prefix:  p,
		limits:  opts.Limits.WithDefaults(),
		buffer:  opts.WatchBuffer,
		timeout: opts.Timeout,
		ctx:     ctx,
		cancel:  cancel,
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
	if s.owned != nil {
		return s.owned.Close()
	}
	return nil
}

func (s *Store) checkOpen(op string) error {
	if s.isClosed.Load() {
		return fmt.Errorf("store: %s: %w", op, store.ErrClosed)
	}
	return nil
}

// bound returns the context of one call: bounded by the store's timeout,
// and asking etcd to refuse at once, rather than wait, when the member it
// reaches has no leader.
func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	return clientv3.WithRequireLeader(ctx), cancel
}

// fail turns the error of a call made under bound(ctx) into the store's.
// A caller's own cancellation or deadline stays what it is; the store's
// time bound running out, and etcd saying it cannot serve now, are
// store.ErrUnavailable.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("store: %s: %w", op, ctx.Err())
	}
	if errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded {
		return fmt.Errorf("store: %s: %w: etcd did not answer within %s", op, store.ErrUnavailable, s.timeout)
	}
	return etcdErr(op, err)
}

// etcdErr turns an etcd error into the store's.
func etcdErr(op string, err error) error {
	switch {
	case unavailable(err):
		return fmt.Errorf("store: %s: %w: %v", op, store.ErrUnavailable, err)
	case errors.Is(err, rpctypes.ErrTooManyOps), errors.Is(err, rpctypes.ErrRequestTooLarge):
		return fmt.Errorf("store: %s: %v: etcd's limits are below the store's (raise --max-txn-ops or --max-request-bytes, or lower store.Limits): %w",
			op, err, store.ErrTooLarge)
	case errors.Is(err, rpctypes.ErrFutureRev):
		return fmt.Errorf("store: %s: %w", op, store.ErrFutureRev)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

// unavailable reports the errors that say etcd cannot serve now, as
// opposed to refusing this request.
func unavailable(err error) bool {
	for _, e := range []error{rpctypes.ErrNoLeader, rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail,
		rpctypes.ErrTimeoutDueToConnectionLost, rpctypes.ErrLeaderChanged, rpctypes.ErrStopped,
		rpctypes.ErrNotCapable, rpctypes.ErrUnhealthy} {
		if errors.Is(err, e) {
			return true
		}
	}
	return status.Code(err) == codes.Unavailable
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
	cctx, cancel := s.bound(ctx)
	defer cancel()
	resp, err := s.cli.Get(cctx, s.prefix+key)
	if err != nil {
		return store.KV{}, s.fail(ctx, fmt.Sprintf("get %q", key), err)
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
			return nil, 0, s.fail(ctx, fmt.Sprintf("list %q", prefix), err)
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
		cctx, cancel := s.bound(ctx)
		resp, err := s.cli.Get(cctx, from, opts...)
		cancel()
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
// changes of every cluster sharing it. It is read with an empty Txn: as
// linearizable as a range, so it needs a leader with a quorum behind it,
// and unlike a range the client does not retry it while there is none,
// so that Rev also says at once whether the store can commit.
func (s *Store) Rev(ctx context.Context) (int64, error) {
	if err := s.checkOpen("rev"); err != nil {
		return 0, err
	}
	cctx, cancel := s.bound(ctx)
	defer cancel()
	resp, err := s.cli.Txn(cctx).Commit()
	if err != nil {
		return 0, s.fail(ctx, "rev", err)
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
	cctx, cancel := s.bound(ctx)
	defer cancel()
	resp, err := s.cli.Txn(cctx).If(cmps...).Then(thens...).Commit()
	if err != nil {
		refused := errors.Is(err, rpctypes.ErrNoLeader) // refused before it was proposed
		err = s.fail(ctx, "txn", err)
		if errors.Is(err, store.ErrUnavailable) && !refused {
			// etcd may have taken the proposal before the answer was lost.
			err = fmt.Errorf("%w (the change may or may not have been committed: read before trying again)", err)
		}
		return 0, false, err
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
	cctx, cancel := s.bound(ctx)
	defer cancel()
	_, err := s.cli.Compact(cctx, rev)
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return nil
	case errors.Is(err, rpctypes.ErrFutureRev):
		cur, _ := s.Rev(ctx)
		return fmt.Errorf("store: compact: revision %d, the current revision is %d: %w", rev, cur, store.ErrFutureRev)
	case err != nil:
		return s.fail(ctx, "compact", err)
	}
	return nil
}

// Limits returns the limits this store holds requests to.
func (s *Store) Limits() store.Limits { return s.limits }
