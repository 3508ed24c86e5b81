package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// DefaultDialTimeout bounds Open's wait for a member to answer.
const DefaultDialTimeout = 5 * time.Second

// Config says how to reach an etcd cluster, for Open.
type Config struct {
	// Endpoints are the members' client URLs: http://HOST:PORT or
	// https://HOST:PORT.
	Endpoints []string
	// CAFile verifies the members' certificates (default: the system's
	// roots); CertFile and KeyFile are the client certificate, for an
	// etcd started with --client-cert-auth.
	CAFile, CertFile, KeyFile string
	// DialTimeout bounds how long Open waits for a member with a leader
	// to answer (DefaultDialTimeout if 0).
	DialTimeout time.Duration
	// Logger receives the etcd client's own log lines (default
	// slog.Default()), with component=etcd-client.
	Logger *slog.Logger
	// Store configures the Store over the client.
	Store Options
}

// Open connects to etcd and returns a Store that owns the client (Close
// closes it). It fails within the dial timeout, naming each endpoint and
// why it did not answer (`etcd at https://10.0.0.1:2379: tls: failed to
// verify certificate: x509: certificate signed by unknown authority`),
// unless at least one member answers and has a leader.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints: give the members' client URLs, such as https://10.0.0.1:2379")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	for _, ep := range cfg.Endpoints {
		if u, err := url.Parse(ep); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("etcd: endpoint %q: want http://HOST:PORT or https://HOST:PORT", ep)
		}
	}
	var tc *tls.Config
	if cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "" {
		c, err := (transport.TLSInfo{TrustedCAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd: TLS files: %w", err)
		}
		c.MinVersion = tls.VersionTLS12
		tc = c
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if err := probeAny(pctx, cfg.Endpoints, tc); err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.Endpoints, TLS: tc, DialTimeout: cfg.DialTimeout,
		Logger: zap.New(slogCore{h: cfg.Logger.With("component", "etcd-client").Handler()})})
	if err != nil {
		return nil, fmt.Errorf("etcd at %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	s, err := New(cli, cfg.Store)
	if err != nil {
		cli.Close()
		return nil, err
	}
	s.owned = cli
	return s, nil
}

// probeAny asks every endpoint at once for its status, until one answers
// with a leader or ctx ends; then the error names each endpoint's cause.
func probeAny(ctx context.Context, endpoints []string, tc *tls.Config) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(endpoints))
	for _, ep := range endpoints {
		go func() { errs <- probe(ctx, ep, tc) }()
	}
	var all []error
	for range endpoints {
		err := <-errs
		if err == nil {
			return nil
		}
		all = append(all, err)
	}
	return errors.Join(all...)
}

// probe asks one member for its status, again every 100 ms, with an RPC
// that fails at once when the connection does (the etcd client itself
// retries until its deadline and then reports only the deadline). A
// member not up yet may be starting: it is asked again until ctx ends; a
// TLS failure is a configuration error, reported at once.
func probe(ctx context.Context, ep string, tc *tls.Config) error {
	u, _ := url.Parse(ep)
	creds := insecure.NewCredentials()
	if u.Scheme == "https" {
		c := &tls.Config{MinVersion: tls.VersionTLS12}
		if tc != nil {
			c = tc.Clone()
		}
		creds = credentials.NewTLS(c)
	}
	conn, err := grpc.NewClient("passthrough:///"+u.Host, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("etcd at %s: %w", ep, err)
	}
	defer conn.Close()
	mc := pb.NewMaintenanceClient(conn)
	var last error
	for {
		resp, err := mc.Status(ctx, &pb.StatusRequest{})
		switch {
		case err == nil && resp.Leader != 0:
			return nil
		case err == nil:
			last = fmt.Errorf("etcd at %s: member %s has no leader (is a quorum of the cluster up?)", ep, strconv.FormatUint(resp.Header.GetMemberId(), 16))
		case status.Code(err) != codes.DeadlineExceeded && status.Code(err) != codes.Canceled || last == nil:
			cause := grpcCause(err, u.Scheme, tc != nil && len(tc.Certificates) > 0)
			last = fmt.Errorf("etcd at %s: %s", ep, cause)
			if strings.Contains(cause, "tls:") || strings.Contains(cause, "x509:") {
				return last // a configuration error: waiting will not mend it
			}
		}
		select {
		case <-ctx.Done():
			return last
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// grpcCause is the message of a failed RPC without gRPC's wrapping, with
// a hint for the usual mistakes: plain HTTP to a TLS server, no client
// certificate for one that requires it.
func grpcCause(err error, scheme string, withCert bool) string {
	msg := status.Convert(err).Message()
	if i := strings.Index(msg, `desc = "`); i >= 0 {
		if uq, err := strconv.Unquote(msg[i+len("desc = "):]); err == nil {
			msg = uq
		}
	}
	msg = strings.TrimPrefix(msg, "transport: ")
	msg = strings.TrimPrefix(msg, "Error while dialing: ")
	switch {
	case withCert:
	case strings.Contains(msg, "bad certificate") || strings.Contains(msg, "certificate required"):
		msg += " (the member requires a client certificate: give --etcd-cert and --etcd-key)"
	case scheme == "https" && (strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset") || strings.HasSuffix(msg, "EOF")):
		// Under TLS 1.3 a member that refuses a client without a
		// certificate may close the connection before its alert is read:
		// the client sees only the connection end.
		msg += " (the member closed the connection during TLS: if it requires a client certificate, give --etcd-cert and --etcd-key)"
	}
	if scheme == "http" && (strings.Contains(msg, "server preface") || strings.Contains(msg, "EOF")) {
		msg += " (the member closed the connection: if it serves TLS, use https:// and --etcd-ca)"
	}
	return msg
}
