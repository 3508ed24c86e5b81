package etcdtest

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Embedded is a one-member etcd running in the test's own process (etcd's
// embed package, of the client's version).
type Embedded struct {
	e        *embed.Etcd
	Endpoint string // the client URL
}

// StartEmbedded starts an embedded etcd with its data under dir, on
// loopback ports chosen by the kernel. embed cannot take port 0 for its
// peer URL, so the ports are found by listening and closing, and another
// process may take one in between: then it tries again.
func StartEmbedded(dir string) (*Embedded, error) {
	var lastErr error
	for attempt := range 5 {
		cfg := embed.NewConfig()
		cfg.Name = "test"
		cfg.Dir = fmt.Sprintf("%s/member-%d", dir, attempt)
		cfg.LogLevel = "error"
		cfg.UnsafeNoFsync = true // the tests do not test etcd's durability
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		ports, err := FreePorts(2)
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
			return nil, fmt.Errorf("etcdtest: start embedded etcd: %w", err)
		}
		select {
		case <-e.Server.ReadyNotify():
			return &Embedded{e: e, Endpoint: client.String()}, nil
		case err := <-e.Err():
			e.Close()
			return nil, fmt.Errorf("etcdtest: start embedded etcd: %w", err)
		case <-time.After(startTimeout):
			e.Close()
			return nil, errors.New("etcdtest: start embedded etcd: not ready after 30s")
		}
	}
	return nil, fmt.Errorf("etcdtest: start embedded etcd: no free ports after 5 attempts: %w", lastErr)
}

// Close stops the embedded etcd.
func (e *Embedded) Close() { e.e.Close() }
