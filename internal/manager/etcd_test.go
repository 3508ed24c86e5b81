package manager_test

import (
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/etcdstore"
)

// TestTwoManagersOverEtcd runs two managers over a real etcd (in this
// process), each with its own etcd client, as HA deploys them.
func TestTwoManagersOverEtcd(t *testing.T) {
	endpoint := startEtcd(t)
	testTwoManagers(t, t.TempDir(), func() store.Store { return etcdStore(t, endpoint) })
}

// etcdStore returns a store over the etcd at endpoint, with a client of
// its own.
func etcdStore(t *testing.T, endpoint string) store.Store {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
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

// startEtcd starts a one-member etcd on loopback and returns its client
// URL; it stops at the test's end.
func startEtcd(t *testing.T) string {
	t.Helper()
	for attempt := range 5 {
		cfg := embed.NewConfig()
		cfg.Name = "test"
		cfg.Dir = t.TempDir()
		cfg.LogLevel = "error"
		cfg.UnsafeNoFsync = true
		var ports [2]int
		for i := range ports {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ports[i] = l.Addr().(*net.TCPAddr).Port
			l.Close()
		}
		client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
		peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		e, err := embed.StartEtcd(cfg)
		if err != nil {
			t.Logf("start etcd (attempt %d): %v", attempt+1, err)
			continue
		}
		t.Cleanup(e.Close)
		select {
		case <-e.Server.ReadyNotify():
			return client.String()
		case <-time.After(30 * time.Second):
			t.Fatal("etcd not ready after 30 s")
		}
	}
	t.Fatal("etcd did not start")
	return ""
}
