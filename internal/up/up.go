// Package up is `bulkhead up`: Bulkhead on one machine from one command.
// It starts a manager with the embedded store and an agent for this host
// in one process — the agent joins its own manager and follows it like
// any other host's agent would — installs a default-deny baseline, and
// with the demo attaches a trading floor of workloads in network
// namespaces whose clients try allowed and denied connections, printed
// as they happen with what the kernel logged about them.
//
// docs/up.md describes it; `bulkhead up --help` for the flags.
package up

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/examples/demo"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/agent/ask"
	"github.com/bulkhead-dev/bulkhead/internal/agent/feed"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/flows"
	"github.com/bulkhead-dev/bulkhead/internal/manager"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/pki"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

// Options configure Start. The zero value of each field has a default.
type Options struct {
	// DataDir holds the manager's files (store, CA, admin token) and, in
	// agent/, the agent's state (default /var/lib/bulkhead).
	DataDir string
	// Listen is the manager's address (default 127.0.0.1:8443).
	Listen string
	// NetNS is the path of the network namespace to treat as this host:
	// where the agent enforces and the demo attaches ("": the process's
	// own). Tests point it at a throwaway namespace.
	NetNS string
	// Socket is the agent's local API socket ("": none).
	Socket string
	// Host is this host's name (default: the system's, lowercased).
	Host string
	// LogGroup is the NFLOG group the dataplane logs to and the demo reads.
	LogGroup uint16
	// Demo attaches the demo trading floor.
	Demo bool
	// DemoPrefix prefixes the demo's namespace names (default "bhdemo-").
	DemoPrefix string
	// DemoSubnet holds the demo's addresses (default 10.213.0.0/24).
	DemoSubnet netip.Prefix
	// DemoEvery is how often the demo's clients try their connections
	// (default 5 s).
	DemoEvery time.Duration
	// Version is reported with the host's status.
	Version string
	// Out receives what people read: the connections as they happen.
	Out io.Writer
	// Logger receives the components' logs; nil logs nothing.
	Logger *slog.Logger
}

func (o *Options) defaults() error {
	if o.DataDir == "" {
		o.DataDir = "/var/lib/bulkhead"
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:8443"
	}
	if o.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("up: host name: %w (give one with --host)", err)
		}
		o.Host = strings.ToLower(h)
	}
	if err := pki.ValidHost(o.Host); err != nil {
		return fmt.Errorf("up: %w (give one with --host)", err)
	}
	if o.DemoPrefix == "" {
		o.DemoPrefix = "bhdemo-"
	}
	if !o.DemoSubnet.IsValid() {
		o.DemoSubnet = netip.MustParsePrefix("10.213.0.0/24")
	}
	if o.DemoEvery <= 0 {
		o.DemoEvery = 5 * time.Second
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Up is a running manager and agent, with the demo when asked for.
type Up struct {
	opts  Options
	st    *boltstore.Store
	m     *manager.Manager
	admin *client.Client
	a     *agent.Agent
	f     *feed.Follower
	ask   *ask.Asker
	flows *flows.Collector
	logs  *logTable // the dataplane's log records, for the demo's screen
	demo  *demoFloor
	ready time.Duration
}

// ErrPrivileges is returned when the process may not program nftables
// or make network namespaces.
var ErrPrivileges = errors.New("bulkhead up needs root (CAP_NET_ADMIN) to program nftables and create network namespaces")

// Start brings everything up and returns when the baseline (and the
// demo) is enforced. On error, whatever started is stopped again.
func Start(ctx context.Context, opts Options) (_ *Up, err error) {
	t0 := time.Now()
	if err := CheckPrivileges(); err != nil {
		return nil, err
	}
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	u := &Up{opts: opts}
	defer func() {
		if err != nil {
			u.Close()
		}
	}()
	// The manager listens on loopback, which a namespace fresh from `ip
	// netns add` has down (every real host has it up).
	if err := linkUp("lo")(); err != nil {
		return nil, fmt.Errorf("up: loopback: %w", err)
	}
	if err := u.startManager(ctx); err != nil {
		return nil, err
	}
	rev, err := u.installPolicies(ctx)
	if err != nil {
		return nil, err
	}
	if err := u.startAgent(ctx); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := u.f.WaitRealized(wctx, rev); err != nil {
		return nil, fmt.Errorf("up: the agent did not enforce the policy: %w", err)
	}
	if opts.Demo {
		if u.demo, err = startDemo(ctx, u); err != nil {
			return nil, err
		}
		// Ready means `bulkhead get workloads` in another terminal lists
		// them all: wait until the manager has every report.
		if err := u.waitReported(ctx, len(u.demo.wls)); err != nil {
			return nil, err
		}
	}
	u.ready = time.Since(t0)
	return u, nil
}

// waitReported waits until the manager lists n workloads of this host.
func (u *Up) waitReported(ctx context.Context, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		l, err := u.admin.Workloads(ctx, u.opts.Host)
		if err == nil && len(l.Items) >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("up: the manager does not list the demo's %d workloads: %w", n, errors.Join(err, ctx.Err()))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (u *Up) startManager(ctx context.Context) error {
	o := u.opts
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return fmt.Errorf("up: data directory: %w", err)
	}
	st, err := boltstore.Open(filepath.Join(o.DataDir, "bulkhead.db"), boltstore.Options{})
	if err != nil {
		return err
	}
	u.st = st
	u.m, err = manager.Start(ctx, manager.Config{Store: st, DataDir: o.DataDir, Listen: o.Listen,
		Logger: o.Logger.With("component", "manager")})
	if err != nil {
		return err
	}
	u.admin, err = client.New(client.Config{URL: u.m.URL(), CA: u.m.CAPEM(), Token: u.m.AdminToken()})
	return err
}

// installPolicies applies the default-deny baseline when the manager
// holds no policy yet (a later `up` leaves what you changed alone), and
// the demo's policies with the demo. It returns the policy revision in
// force.
func (u *Up) installPolicies(ctx context.Context) (int64, error) {
	var files []demo.File
	if u.opts.Demo {
		files = append(demo.Files(), demo.Decisions()...)
	} else {
		objs, err := u.admin.Objects(ctx, "policies")
		if err != nil {
			return 0, err
		}
		if len(objs.Items) == 0 {
			f, err := demo.Read(demo.Baseline)
			if err != nil {
				return 0, err
			}
			files = append(files, f)
		}
	}
	if len(files) > 0 {
		req := api.ManagerApplyRequest{Message: "bulkhead up"}
		for _, f := range files {
			req.Documents = append(req.Documents, api.Document{Name: f.Name, Data: string(f.Data)})
		}
		res, err := u.admin.Apply(ctx, req)
		if err != nil {
			return 0, fmt.Errorf("up: install the policies: %w", err)
		}
		if res.Revision > 0 {
			return res.Revision, nil
		}
	}
	revs, err := u.admin.RevisionsPage(ctx, 1, "")
	if err != nil || len(revs.Items) == 0 {
		return 0, err
	}
	return revs.Items[0].Revision, nil
}

// startAgent joins this host to its own manager (once: the credentials
// stay in DATA-DIR/agent/manager) and starts its agent and follower.
func (u *Up) startAgent(ctx context.Context) error {
	o := u.opts
	credDir := filepath.Join(o.DataDir, "agent", "manager")
	token, caHash := "", ""
	if _, err := client.LoadCredentials(credDir); err != nil {
		jt, err := u.m.CreateJoinToken(ctx, o.Host, 15*time.Minute)
		if err != nil {
			return err
		}
		token, caHash = jt.Secret, jt.CAHash
	}
	if _, err := feed.Join(ctx, credDir, u.m.URL(), u.m.CAPEM(), caHash, token, o.Host); err != nil {
		return err
	}
	dp, err := nft.New(nft.Options{NetNS: o.NetNS, LogGroup: o.LogGroup, Logger: o.Logger.With("component", "nft")})
	if err != nil {
		return err
	}
	u.a, err = agent.Start(ctx, agent.Options{StateDir: filepath.Join(o.DataDir, "agent", "state"), Socket: o.Socket,
		Host: o.Host, Dataplane: dp, Manager: u.m.URL(), Logger: o.Logger})
	if err != nil {
		return err
	}
	u.f, err = feed.Start(ctx, feed.Options{Agent: u.a, URL: u.m.URL(), Dir: credDir, Version: o.Version,
		Logger: o.Logger})
	if err != nil {
		return err
	}
	// The escalated connections are decided by the manager's decision rules.
	u.ask, err = ask.Start(ask.Options{Agent: u.a, URL: u.m.URL(), Dir: credDir, NetNS: o.NetNS, Logger: o.Logger})
	if err != nil {
		return err
	}
	// Every flow, as the kernel saw it, goes to the manager's flow store
	// (`bulkhead flows`); the collector is the one reader of the
	// dataplane's log group, and hands its records to the demo too.
	logs := newLogTable()
	u.flows, err = feed.StartFlows(feed.FlowOptions{Agent: u.a, URL: u.m.URL(), Dir: credDir, NetNS: o.NetNS,
		LogGroup: o.LogGroup, Counters: dp, StateDir: filepath.Join(o.DataDir, "agent", "flows"), Logger: o.Logger,
		OnLog: logs.observe})
	if err != nil {
		return err
	}
	u.logs = logs
	return nil
}

// Close stops the demo (its namespaces are removed), the agent (its
// enforcement stays in the kernel; nft.Cleanup removes it) and the
// manager.
func (u *Up) Close() error {
	var errs []error
	if u.demo != nil {
		errs = append(errs, u.demo.close())
	}
	if u.flows != nil {
		errs = append(errs, u.flows.Close())
	}
	if u.ask != nil {
		errs = append(errs, u.ask.Close())
	}
	if u.f != nil {
		errs = append(errs, u.f.Close())
	}
	if u.a != nil {
		errs = append(errs, u.a.Close())
	}
	if u.m != nil {
		errs = append(errs, u.m.Close())
	}
	if u.st != nil {
		errs = append(errs, u.st.Close())
	}
	return errors.Join(errs...)
}

// URL is the manager's.
func (u *Up) URL() string { return u.m.URL() }

// CAFile is the manager's CA certificate file.
func (u *Up) CAFile() string { return filepath.Join(u.opts.DataDir, manager.CAFile) }

// CA is the manager's CA certificate, PEM.
func (u *Up) CA() []byte { return u.m.CAPEM() }

// AdminToken is the first admin token.
func (u *Up) AdminToken() string { return u.m.AdminToken() }

// Ready is how long Start took.
func (u *Up) Ready() time.Duration { return u.ready }

// Agent is this host's agent.
func (u *Up) Agent() *agent.Agent { return u.a }

// Host is this host's name.
func (u *Up) Host() string { return u.opts.Host }

// Demo describes the demo's workloads and connections ("" without it).
func (u *Up) Demo() string {
	if u.demo == nil {
		return ""
	}
	return u.demo.describe()
}

// StartClients starts the demo's clients (after whatever the caller
// prints first); without the demo it does nothing.
func (u *Up) StartClients() {
	if u.demo != nil {
		u.demo.startClients()
	}
}

// Attempts returns the demo connections' latest outcomes.
func (u *Up) Attempts() []Attempt {
	if u.demo == nil {
		return nil
	}
	return u.demo.latest()
}

// CheckPrivileges reports ErrPrivileges unless the process has
// CAP_NET_ADMIN and CAP_SYS_ADMIN (namespaces are bind-mounted).
func CheckPrivileges() error {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return fmt.Errorf("%w: %v", ErrPrivileges, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		hex, ok := strings.CutPrefix(line, "CapEff:")
		if !ok {
			continue
		}
		var caps uint64
		if _, err := fmt.Sscanf(strings.TrimSpace(hex), "%x", &caps); err != nil {
			break
		}
		const netAdmin, sysAdmin = 12, 21
		if caps&(1<<netAdmin) != 0 && caps&(1<<sysAdmin) != 0 {
			return nil
		}
		break
	}
	return ErrPrivileges
}
