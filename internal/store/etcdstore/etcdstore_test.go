package etcdstore

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/etcdstore/etcdtest"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// endpoint is the client URL of the etcd that TestMain runs in this process.
var endpoint string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "etcdstore-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	e, err := etcdtest.StartEmbedded(dir)
	if err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	endpoint = e.Endpoint
	code := m.Run()
	e.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

func newClient(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	if len(endpoints) == 0 {
		endpoints = []string{endpoint}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

var clusters atomic.Int64

// opener returns stores on their own prefix of the one etcd TestMain
// runs, each handle with a client of its own, as separate managers have.
func opener(t *testing.T) (store.Store, func() store.Store) { return openerOn(t, endpoint) }

// openerOn is opener for the etcd at endpoints.
func openerOn(t *testing.T, endpoints ...string) (store.Store, func() store.Store) {
	return openerWith(t, func(prefix string) (*Store, error) {
		return New(newClient(t, endpoints...), Options{Prefix: prefix})
	})
}

// openerWith returns stores that newStore makes on a prefix of their own,
// closed when t ends.
func openerWith(t *testing.T, newStore func(prefix string) (*Store, error)) (store.Store, func() store.Store) {
	prefix := fmt.Sprintf("/bulkhead/test-%d/", clusters.Add(1))
	open := func() store.Store {
		s, err := newStore(prefix)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	return open(), open
}

func TestConformance(t *testing.T) {
	storetest.Run(t, opener)
}

func TestClustersSharingAnEtcdAreApart(t *testing.T) {
	ctx := t.Context()
	a, _ := opener(t)
	b, _ := opener(t)
	if _, _, err := a.Txn(ctx, nil, []store.Op{store.Put("k", []byte("a"))}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(ctx, "k"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another cluster's key is visible: %v", err)
	}
	kvs, _, err := b.List(ctx, "")
	if err != nil || len(kvs) != 0 {
		t.Fatalf("list of an empty cluster: %v %v", kvs, err)
	}
}

func TestListPages(t *testing.T) {
	ctx := t.Context()
	s, _ := opener(t)
	const n = 2*listPage + 7
	for i := 0; i < n; i += store.DefaultMaxTxnOps {
		var ops []store.Op
		for j := i; j < min(n, i+store.DefaultMaxTxnOps); j++ {
			ops = append(ops, store.Put(fmt.Sprintf("p/%05d", j), []byte("v")))
		}
		if _, _, err := s.Txn(ctx, nil, ops); err != nil {
			t.Fatal(err)
		}
	}
	kvs, _, err := s.List(ctx, "p/")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != n {
		t.Fatalf("listed %d keys over pages, want %d", len(kvs), n)
	}
	for i, kv := range kvs {
		if kv.Key != fmt.Sprintf("p/%05d", i) {
			t.Fatalf("key %d is %q", i, kv.Key)
		}
	}
}

func TestPrefixIsChecked(t *testing.T) {
	for _, p := range []string{"", "/bulkhead", strings.Repeat("x", MaxPrefixBytes) + "/"} {
		if _, err := New(nil, Options{Prefix: p}); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("prefix %q: %v, want ErrInvalid", p, err)
		}
	}
}
