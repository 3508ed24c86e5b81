// Package manager is Bulkhead's management server: the one public API
// (JSON over HTTPS, TLS 1.3, described by api/openapi.yaml) that the CLI,
// the console and the agents use. It keeps everything in a store.Store
// (internal/store): the policy objects as numbered revisions, the
// workloads the agents report, the cluster-wide identities, the hosts,
// the access records and the hash-chained audit log. It holds no state of
// its own beyond caches, so several managers may share one etcd.
//
// docs/manager.md describes the API, the access model, the PKI and the
// join, revisions, the agents' watch protocol and HA.
//
// Start a manager in-process (tests, `bulkhead up`):
//
//	st, _ := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
//	m, err := manager.Start(ctx, manager.Config{Store: st, DataDir: dir, Listen: "127.0.0.1:0"})
//	defer m.Close()
//	// m.URL(), m.CAPEM(), m.AdminToken()
package manager

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/auditlog"
	"github.com/bulkhead-dev/bulkhead/internal/manager/bindings"
	"github.com/bulkhead-dev/bulkhead/internal/manager/bounds"
	"github.com/bulkhead-dev/bulkhead/internal/manager/datadir"
	"github.com/bulkhead-dev/bulkhead/internal/manager/escalations"
	"github.com/bulkhead-dev/bulkhead/internal/manager/feed"
	"github.com/bulkhead-dev/bulkhead/internal/manager/flowstore"
	"github.com/bulkhead-dev/bulkhead/internal/manager/identities"
	"github.com/bulkhead-dev/bulkhead/internal/manager/inventory"
	"github.com/bulkhead-dev/bulkhead/internal/manager/mirror"
	"github.com/bulkhead-dev/bulkhead/internal/manager/revisions"
	"github.com/bulkhead-dev/bulkhead/internal/manager/seal"
	"github.com/bulkhead-dev/bulkhead/internal/pki"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Files the manager writes to its data directory.
const (
	AdminTokenFile = "admin.token" // the first admin token, 0600
	CAFile         = "ca.crt"      // the CA certificate, for clients
	URLFile        = "url"         // the URL the manager serves, once it listens
	keyCA          = "pki/ca"
	keyBootstrap   = "auth/bootstrap"
)

// Config configures a manager. Store and DataDir are required.
type Config struct {
	Store   store.Store
	DataDir string
	// Listen is the address to serve on (default 127.0.0.1:8443).
	Listen string
	// Names are extra DNS names and addresses for the server certificate;
	// the listen address, localhost, 127.0.0.1 and ::1 are always in it.
	Names  []string
	Logger *slog.Logger
	// MaxBodyBytes bounds a request body (default 32 MiB); Limits bound
	// public bodies, timeouts and what one client may hold open.
	MaxBodyBytes int64
	Limits       Limits
	// Heartbeat is the interval of heartbeat lines on a quiet watch
	// (default 5 s).
	Heartbeat time.Duration
	// WatchBuffer bounds the chunks of lines (a revision's, or up to
	// 64 KiB of a snapshot) a watch holds for a slow reader (default
	// 256); SlowReaderCutoff is how long they may stay full before the
	// reader is cut off (default 10 s).
	WatchBuffer      int
	SlowReaderCutoff time.Duration
	// ClientValidity is how long an agent certificate is valid (default
	// pki.ClientValidity).
	ClientValidity time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// KeyFile is the manager key, the secret outside the store that seals
	// the access records and signs the audit head (default
	// DataDir/manager.key; created with the store). Managers that share a
	// store share it.
	KeyFile string
	// Flows bounds the flow store (DataDir/flows).
	Flows FlowConfig
	// AdoptRecords seals the access records of a store from before the
	// manager key when the key is created (they are trusted as they are).
	AdoptRecords bool
}

func (c *Config) defaults() error {
	if c.Store == nil || c.DataDir == "" {
		return errors.New("manager: Config.Store and Config.DataDir are required")
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8443"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 32 << 20
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 5 * time.Second
	}
	c.Limits = c.Limits.withDefaults()
	if c.WatchBuffer <= 0 {
		c.WatchBuffer = 256
	}
	if c.SlowReaderCutoff <= 0 {
		c.SlowReaderCutoff = 10 * time.Second
	}
	if c.ClientValidity <= 0 {
		c.ClientValidity = pki.ClientValidity
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.KeyFile == "" {
		c.KeyFile = filepath.Join(c.DataDir, KeyFile)
	}
	return nil
}

// Manager is a running management server.
type Manager struct {
	cfg Config
	st  store.Store
	log *slog.Logger
	ca  *pki.CA
	key *seal.Key
	// auditLog commits every change with its audit entry and anchors the
	// log outside the store (internal/manager/auditlog).
	auditLog *auditlog.Log

	// history reads the policy revisions' states, checked and cached
	// (internal/manager/revisions).
	history revisions.History
	sets    setCache
	applyMu sync.Mutex           // serializes this manager's applies; the head CAS guards against others
	ids     identities.Allocator // gives workloads their identities (internal/manager/identities)
	// bindings are the Brewer–Nash bindings (internal/manager/bindings).
	bindings *bindings.Bindings

	auth, feed, hosts, revisions *mirror.Mirror // the copies of the store (copies.go)
	tab                          tables
	lastNSLabels                 string              // identityLoop's: the namespaces' labels it last saw
	inv                          inventory.Inventory // the reported workloads, indexed, kept by the feed's copy
	hostTab                      *hostTable
	bounds                       bounds.Index   // what each host may claim, kept by the copy of hosts/
	claims                       bounds.Checker // judges reports by bounds and inv
	reportRefusals               refusalLog
	feedServer                   *feed.Server // the agents' feed (internal/manager/feed)
	limiter                      *limiter
	alerts                       *alerts
	esc                          *escalations.Service // escalated connections (escalations.go)
	final                        seal.Final
	flowStore                    *flowstore.Store // the flows agents send (flows.go)
	flowAlerts                   flowDetector     // alerts from the flows as they arrive (flowalerts.go)
	collectHook                  func()           // tests: runs between the collector's reads and its removals

	storeOK    storeHealth // the last probe of the store, for /readyz
	adminToken string
	mux        *http.ServeMux
	routes     []route
	srv        *http.Server
	ln         net.Listener
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// New prepares a manager: the CA (created on the first start, shared
// through the store), the first admin token, and the store followers. It
// does not listen; Serve or Start does.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("manager: data directory: %w", err)
	}
	m := &Manager{cfg: cfg, st: cfg.Store, log: cfg.Logger.With("component", "manager"),
		hostTab: newHostTable(), limiter: newLimiter(cfg.Limits, cfg.Now),
		alerts: newAlerts()}
	m.claims = bounds.Checker{Index: &m.bounds, Workloads: &m.inv, Live: m.hostLive}
	m.auditLog = auditlog.New(auditlog.Config{Store: cfg.Store, Dir: cfg.DataDir, Now: cfg.Now, Logger: m.log, Alert: m.raise})
	m.ids.Store = cfg.Store
	m.bindings = bindings.New(bindings.Config{Store: cfg.Store, Audit: m.auditLog, Now: cfg.Now})
	m.feedServer = &feed.Server{Store: cfg.Store, History: &m.history, Log: m.log, Heartbeat: cfg.Heartbeat,
		Buffer: cfg.WatchBuffer, Cutoff: cfg.SlowReaderCutoff}
	m.history.Blobs = &revisions.Blobs{Store: cfg.Store}
	m.history.Check = m.checkRevision
	m.history.Tampered = func(key string) {
		m.raise("revision-seal", key, "the policy revision's seal does not verify: it was written or changed outside the manager; its objects are not served")
	}
	m.history.Blobs.OnMismatch = func(key, got string) {
		m.raise("blob-mismatch", key, "the blob's content hashes to "+got+", not to its name: it was changed outside the manager; what names it is not served")
	}
	ca, err := m.loadCA(ctx)
	if err != nil {
		return nil, err
	}
	m.ca = ca
	if err := m.loadKey(ctx); err != nil {
		return nil, err
	}
	if err := m.auditLog.LoadHead(m.key.Audit()); err != nil {
		return nil, err
	}
	if err := m.final.Load(m.finalPath()); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(cfg.DataDir, CAFile), ca.CertPEM(), 0o644); err != nil {
		return nil, err
	}
	if err := m.bootstrap(ctx); err != nil {
		return nil, err
	}
	m.auditLog.CheckAtStart(ctx)
	if err := m.openFlows(); err != nil {
		return nil, err
	}
	m.newCopies()
	if m.esc, err = m.newEscalations(); err != nil {
		return nil, err
	}
	m.routes = m.routeTable()
	m.mux = http.NewServeMux()
	for _, rt := range m.routes {
		m.mux.Handle(rt.method+" "+rt.path, m.wrap(rt))
	}
	return m, nil
}

// loadCA reads the CA from the store, creating it if there is none; of
// two managers starting at once, the first to commit wins and the other
// reads its CA.
func (m *Manager) loadCA(ctx context.Context) (*pki.CA, error) {
	for range 3 {
		kv, err := m.st.Get(ctx, keyCA)
		if err == nil {
			var v struct{ Cert, Key string }
			if err := json.Unmarshal(kv.Value, &v); err != nil {
				return nil, fmt.Errorf("manager: CA in the store: %w", err)
			}
			return pki.ParseCA([]byte(v.Cert), []byte(v.Key))
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("manager: read CA: %w", err)
		}
		ca, err := pki.NewCA("Bulkhead CA", m.cfg.Now())
		if err != nil {
			return nil, err
		}
		keyPEM, err := ca.KeyPEM()
		if err != nil {
			return nil, err
		}
		value, _ := json.Marshal(struct{ Cert, Key string }{string(ca.CertPEM()), string(keyPEM)})
		if _, ok, err := m.st.Txn(ctx, []store.Cond{store.Absent(keyCA)}, []store.Op{store.Put(keyCA, value)}); err != nil {
			return nil, fmt.Errorf("manager: store CA: %w", err)
		} else if ok {
			m.log.Info("created the CA", "subject", ca.Cert.Subject.String())
			return ca, nil
		}
	}
	return nil, errors.New("manager: CA: the store keeps changing under the CA key")
}

// bootstrap creates the first admin token, once per store, and writes it
// to the data directory for `bulkhead up` and the CLI.
func (m *Manager) bootstrap(ctx context.Context) error {
	path := filepath.Join(m.cfg.DataDir, AdminTokenFile)
	if data, err := os.ReadFile(path); err == nil {
		m.adminToken = string(trimNL(data))
	}
	if _, err := m.st.Get(ctx, keyBootstrap); err == nil {
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("manager: read %s: %w", keyBootstrap, err)
	}
	tok, _, err := m.createToken(ctx, system, "admin", api.RoleAdmin,
		[]store.Cond{store.Absent(keyBootstrap)}, []store.Op{store.Put(keyBootstrap, []byte(m.cfg.Now().UTC().Format(time.RFC3339)))})
	if fault.KindOf(err) == fault.Conflict {
		return nil // another manager bootstrapped the store at the same moment
	}
	if err != nil {
		return err
	}
	m.adminToken = tok.Secret
	m.log.Info("created the first admin token", "file", path)
	return writeFile(path, []byte(tok.Secret+"\n"), 0o600)
}

// Handler returns the API's handler, for serving it elsewhere.
func (m *Manager) Handler() http.Handler { return m.mux }

// CAPEM returns the CA certificate in PEM: what clients trust.
func (m *Manager) CAPEM() []byte { return m.ca.CertPEM() }

// CA returns the manager's certificate authority.
func (m *Manager) CA() *pki.CA { return m.ca }

// AdminToken returns the first admin token if this manager created it or
// found it in its data directory, else "".
func (m *Manager) AdminToken() string { return m.adminToken }

// TLSConfig returns the server's TLS configuration: TLS 1.3 only, a
// certificate for the listen address and cfg.Names, and agents' client
// certificates verified against the CA when they are presented.
func (m *Manager) TLSConfig() (*tls.Config, error) {
	names := append([]string{"localhost", "127.0.0.1", "::1"}, m.cfg.Names...)
	if host, _, err := net.SplitHostPort(m.cfg.Listen); err == nil && host != "" {
		names = append(names, host)
	}
	cert, err := m.ca.ServerCert(names, m.cfg.Now())
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    m.ca.Pool(),
		NextProtos:   []string{"h2", "http/1.1"},
	}, nil
}

// Start prepares a manager, starts following the store and serves on
// cfg.Listen until Close.
func Start(ctx context.Context, cfg Config) (*Manager, error) {
	m, err := New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := m.listen(); err != nil {
		return nil, err
	}
	m.run()
	return m, nil
}

// Serve runs a manager until ctx is done.
func (m *Manager) Serve(ctx context.Context) error {
	if err := m.listen(); err != nil {
		return err
	}
	m.run()
	<-ctx.Done()
	return m.Close()
}

func (m *Manager) listen() error {
	tc, err := m.TLSConfig()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", m.cfg.Listen)
	if err != nil {
		return fmt.Errorf("manager: listen on %s: %w", m.cfg.Listen, err)
	}
	m.ln = ln
	if err := writeFile(filepath.Join(m.cfg.DataDir, URLFile), []byte(m.URL()+"\n"), 0o644); err != nil {
		ln.Close()
		return err
	}
	// The server's timeouts are the defaults of every request; wrap sets
	// each request's own (setDeadlines), so that a watch outlives them.
	lim := m.cfg.Limits
	m.srv = &http.Server{Handler: m.mux, TLSConfig: tc, ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout: lim.ReadHeaderTimeout + lim.BodyTimeout, WriteTimeout: lim.ReadHeaderTimeout + lim.WriteTimeout,
		IdleTimeout: lim.IdleTimeout, ErrorLog: slog.NewLogLogger(m.log.Handler(), slog.LevelDebug)}
	return nil
}

func (m *Manager) run() {
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	for _, mi := range m.mirrors() {
		m.wg.Add(1)
		go func() { defer m.wg.Done(); mi.Run(ctx) }()
	}
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.identityLoop(ctx) }()
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.statusWriter(ctx) }()
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.feedServer.Run(ctx) }()
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.probeStore(ctx) }()
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.alertLoop(ctx) }()
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.auditLog.RefusalLoop(ctx) }()
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.headLoop(ctx) }()
	m.wg.Add(1)
	go func() { defer m.wg.Done(); m.flowRetainLoop(ctx) }()
	if m.srv != nil {
		// Requests, and so every watch, end when the manager closes.
		m.srv.BaseContext = func(net.Listener) context.Context { return ctx }
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			if err := m.srv.ServeTLS(m.ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				m.log.Error("serve", "err", err)
			}
		}()
		m.log.Info("serving", "url", m.URL())
	}
}

// WaitReady waits until the manager has read the store once.
func (m *Manager) WaitReady(ctx context.Context) error {
	for _, mi := range m.mirrors() {
		select {
		case <-mi.Ready():
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (m *Manager) ready() bool {
	for _, mi := range m.mirrors() {
		select {
		case <-mi.Ready():
		default:
			return false
		}
	}
	return true
}

// Addr is the address the manager listens on.
func (m *Manager) Addr() net.Addr { return m.ln.Addr() }

// URL is the manager's base URL, https://ADDR.
func (m *Manager) URL() string { return "https://" + m.ln.Addr().String() }

// Close stops serving, ending every request and watch (a change in
// flight is committed whole or not at all), and stops following the
// store. It does not close the store.
func (m *Manager) Close() error {
	if m.cancel != nil {
		m.cancel()
	}
	var err error
	if m.srv != nil {
		err = m.srv.Close()
	}
	m.wg.Wait()
	if m.flowStore != nil {
		err = errors.Join(err, m.flowStore.Close())
	}
	return err
}

func (m *Manager) now() time.Time { return m.cfg.Now() }

func writeFile(path string, data []byte, mode os.FileMode) error {
	return datadir.WriteFile(path, data, mode)
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// jitter is the wait before retry attempt n of a lost compare-and-set:
// random, up to 2 ms doubling to 100 ms, so that two managers that keep
// colliding soon stop.
func jitter(n int) time.Duration {
	ceil := min(2*time.Millisecond<<min(n, 6), 100*time.Millisecond)
	return time.Duration(rand.Int64N(int64(ceil))) + time.Millisecond
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
