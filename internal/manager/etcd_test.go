package manager_test

import (
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/etcdstore"
	"github.com/bulkhead-dev/bulkhead/internal/store/etcdstore/etcdtest"
)

// TestTwoManagersOverEtcd runs two managers over a real etcd (in this
// process), each with its own etcd client, as HA deploys them.
func TestTwoManagersOverEtcd(t *testing.T) {
	endpoint := startEtcd(t)
	testTwoManagers(t, t.TempDir(), func() store.Store { return etcdStore(t, endpoint) })
}

// TestTwoManagersOverEtcdServer is TestTwoManagersOverEtcd against a
// separately started three-member etcd cluster (Debian's etcd-server), as
// operators run it.
func TestTwoManagersOverEtcdServer(t *testing.T) {
	c := etcdtest.StartCluster(t, etcdtest.Options{Members: 3})
	testTwoManagers(t, t.TempDir(), func() store.Store { return etcdStore(t, c.Endpoints()...) })
}

// etcdStore returns a store over the etcd at endpoint, with a client of
// its own.
func etcdStore(t *testing.T, endpoints ...string) store.Store {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	st, err := etcdstore.New(cli, etcdstore.Options{Prefix: "/bulkhead/test/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close(); cli.Close() })
	return st
}

// startEtcd starts a one-member etcd in this process and returns its
// client URL; it stops at the test's end.
func startEtcd(t *testing.T) string {
	t.Helper()
	e, err := etcdtest.StartEmbedded(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e.Endpoint
}
