package etcdstore

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/bulkhead-dev/bulkhead/internal/store"
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
	e, err := startEtcd(dir)
	if err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	e.Close()
	os.RemoveAll(dir)
	os.Exit(code)
}

// startEtcd starts a single-member etcd on loopback ports chosen by the
// kernel. embed cannot take port 0 for its peer URL, so the ports are
// found by listening and closing, and another process may take one in
// between: then it tries again.
func startEtcd(dir string) (*embed.Etcd, error) {
	var lastErr error
	for attempt := range 5 {
		cfg := embed.NewConfig()
		cfg.Name = "test"
		cfg.Dir = fmt.Sprintf("%s/member-%d", dir, attempt)
		cfg.LogLevel = "error"
		cfg.UnsafeNoFsync = true // the tests do not test etcd's durability
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
		peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			if lastErr = err; strings.Contains(err.Error(), "address already in use") {
				continue
			}
			return nil, fmt.Errorf("start etcd: %w", err)
		}
		select {
		case <-e.Server.ReadyNotify():
			endpoint = client.String()
			return e, nil
		case err := <-e.Err():
			e.Close()
			return nil, fmt.Errorf("start etcd: %w", err)
		case <-time.After(30 * time.Second):
			e.Close()
			return nil, errors.New("start etcd: not ready after 30s")
		}
	}
	return nil, fmt.Errorf("start etcd: no free ports after 5 attempts: %w", lastErr)
}

func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func newClient(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
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

// newStores returns an opener of stores on their own prefix of the one
// etcd, each handle with a client of its own, as separate managers have.
func opener(t *testing.T) (store.Store, func() store.Store) {
	prefix := fmt.Sprintf("/bulkhead/test-%d/", clusters.Add(1))
	open := func() store.Store {
		s, err := New(newClient(t), Options{Prefix: prefix})
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
