package etcdstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/etcdstore/etcdtest"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

// The conformance suite against a separately started etcd server (Debian's
// etcd-server), as operators run it, besides the embedded one of the
// client's own version (TestConformance).
func TestConformanceEtcdServer(t *testing.T) {
	c := etcdtest.StartCluster(t, etcdtest.Options{})
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) { return openerOn(t, c.Endpoints()...) })
}

// The conformance suite over mutual TLS, each handle opened as the
// manager opens it (Open, which owns its client).
func TestConformanceEtcdServerTLS(t *testing.T) {
	files := etcdtest.NewTLS(t)
	c := etcdtest.StartCluster(t, etcdtest.Options{TLS: files, ClientCertAuth: true})
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		return openerWith(t, func(prefix string) (*Store, error) {
			return Open(t.Context(), Config{Endpoints: c.Endpoints(), CAFile: files.CA, CertFile: files.ClientCert, KeyFile: files.ClientKey,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Store: Options{Prefix: prefix}})
		})
	})
}

// Against a three-member cluster that loses two members, every call
// fails within its bound with ErrUnavailable and the cause, and works
// again once a quorum is back.
func TestQuorumLossFailsFast(t *testing.T) {
	c := etcdtest.StartCluster(t, etcdtest.Options{Members: 3})
	const timeout = 2 * time.Second
	s, err := New(newClient(t, c.Endpoints()...), Options{Prefix: "/bulkhead/quorum/", Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	if _, _, err := s.Txn(ctx, nil, []store.Op{store.Put("k", []byte("v"))}); err != nil {
		t.Fatal(err)
	}
	c.Kill(1)
	c.Kill(2)
	calls := []struct {
		name string
		call func() error
	}{
		{"txn", func() error { _, _, err := s.Txn(ctx, nil, []store.Op{store.Put("k", []byte("w"))}); return err }},
		{"get", func() error { _, err := s.Get(ctx, "k"); return err }},
		{"list", func() error { _, _, err := s.List(ctx, ""); return err }},
		{"rev", func() error { _, err := s.Rev(ctx); return err }},
	}
	for _, cl := range calls {
		start := time.Now()
		err := cl.call()
		took := time.Since(start)
		if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "store unavailable") {
			t.Errorf("%s without a quorum: %v, want store.ErrUnavailable", cl.name, err)
		}
		// The bound, and a leader election's worth of slack for the
		// first call, which may start before the survivor noticed.
		if took > timeout+2*time.Second {
			t.Errorf("%s without a quorum took %s, want at most %s", cl.name, took, timeout+2*time.Second)
		}
		t.Logf("%s without a quorum: %s: %v", cl.name, took.Round(time.Millisecond), err)
	}
	c.Restart(1)
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, _, lastErr = s.Txn(ctx, nil, []store.Op{store.Put("k", []byte("back"))}); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("with a quorum back: %v", lastErr)
	}
}

// Open fails within its dial timeout, with the cause, when etcd is not
// there or not configured as the manager is.
func TestOpenFailsWithTheCause(t *testing.T) {
	files := etcdtest.NewTLS(t)
	tlsc := etcdtest.StartCluster(t, etcdtest.Options{TLS: files, ClientCertAuth: true})
	other := etcdtest.NewTLS(t) // another CA
	secure := tlsc.Endpoints()[0]
	plain := strings.Replace(secure, "https://", "http://", 1)
	const dial = 3 * time.Second
	for _, c := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"nothing listening", Config{Endpoints: []string{etcdtest.Refused(t)}}, "connection refused"},
		{"http against TLS", Config{Endpoints: []string{plain}}, "use https://"},
		{"wrong CA", Config{Endpoints: []string{secure}, CAFile: other.CA, CertFile: files.ClientCert, KeyFile: files.ClientKey},
			"x509: certificate signed by unknown authority"},
		{"no CA", Config{Endpoints: []string{secure}, CertFile: files.ClientCert, KeyFile: files.ClientKey}, "x509: certificate signed by unknown authority"},
		{"no client certificate", Config{Endpoints: []string{secure}, CAFile: files.CA}, "requires a client certificate"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.DialTimeout = dial
			c.cfg.Store = Options{Prefix: "/bulkhead/open/"}
			start := time.Now()
			s, err := Open(t.Context(), c.cfg)
			took := time.Since(start)
			t.Logf("%s: %v", took.Round(time.Millisecond), err)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), "etcd at "+c.cfg.Endpoints[0]) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Open: %v, want the endpoint and %q", err, c.want)
			}
			if took > dial+time.Second {
				t.Errorf("Open took %s to fail, want at most the dial timeout %s", took, dial)
			}
		})
	}
	var log bytes.Buffer
	s, err := Open(t.Context(), Config{Endpoints: []string{secure}, CAFile: files.CA, CertFile: files.ClientCert, KeyFile: files.ClientKey,
		DialTimeout: dial, Logger: slog.New(slog.NewTextHandler(&log, nil)), Store: Options{Prefix: "/bulkhead/open/"}})
	if err != nil {
		t.Fatalf("Open with the right CA and certificate: %v", err)
	}
	defer s.Close()
	if _, _, err := s.Txn(t.Context(), nil, []store.Op{store.Put("k", []byte("v"))}); err != nil {
		t.Fatal(err)
	}
}

// The etcd client's log lines go to the manager's slog logger, in its
// format, not as JSON lines of their own.
func TestClientLogsThroughSlog(t *testing.T) {
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})
	l := zap.New(slogCore{h: slog.New(h).With("component", "etcd-client").Handler()})
	l.Named("balancer").With(zap.String("target", "etcd-endpoints://x")).Warn("retrying of unary invoker failed",
		zap.Error(context.DeadlineExceeded), zap.Int("attempt", 3))
	l.Info("internal detail") // debug here: not shown at info
	got := buf.String()
	for _, want := range []string{"level=WARN", `msg="retrying of unary invoker failed"`, "component=etcd-client",
		"target=etcd-endpoints://x", "attempt=3", `error="context deadline exceeded"`} {
		if !strings.Contains(got, want) {
			t.Errorf("log %q lacks %s", got, want)
		}
	}
	if strings.Contains(got, "internal detail") || strings.Contains(got, `{"level"`) {
		t.Errorf("log: %q", got)
	}
}
