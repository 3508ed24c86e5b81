// Package feed connects a host agent to its manager. It joins once (a
// one-time token buys a client certificate, kept in the agent's state
// directory) and then speaks mutual TLS only; it follows the manager's
// resumable watch and applies each revision through the agent's one
// reconcile loop (agent.Sync: the manager's objects replace the agent's,
// and other hosts' workloads enter the inventory as Workload objects
// with their host, so that this host enforces on traffic from them); it
// reports this host's workloads — those the CNI plugin registered — and
// the revision it realized; and it routes to other hosts' workloads
// through their hosts' underlay addresses (Routes).
//
// Fail-static: with the manager gone the agent keeps enforcing its last
// good state, which is in the kernel and in the state directory; the
// follower reconnects with backoff and resumes from the revision after
// the last one it realized. A full resync (a snapshot) is collected
// whole and applied as one Sync, so that no empty or partial state is
// ever enforced.
//
//	creds, _ := feed.Join(ctx, dir, url, nil, caHash, token, "node-1")
//	f, _ := feed.Start(ctx, feed.Options{Agent: a, URL: url, Dir: dir, HostIP: ip})
//	defer f.Close()
package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
)

// Options configure a Follower.
type Options struct {
	// Agent is the host agent to drive; it must have been started with
	// Options.Manager set, and with the host its credentials name.
	Agent *agent.Agent
	// URL is the manager, https://HOST:PORT.
	URL string
	// Dir holds the credentials (Join) and the feed position.
	Dir string
	// HostIP is this host's underlay address, reported with its
	// workloads so that the other hosts route to them through it.
	// Invalid: not reported.
	HostIP netip.Addr
	// Routes, when set, is kept routing to the other hosts' workloads.
	Routes *Routes
	// Version is reported with the host's status.
	Version string
	// Backoff is the wait before reconnect attempt n (default
	// client.Backoff: 100 ms doubling to 10 s).
	Backoff func(n int) time.Duration
	// Timeout bounds each request but the watch (default 10 s); a watch
	// that sends nothing, not even a heartbeat, for three times as long
	// is given up and resumed.
	Timeout time.Duration
	// Logger receives state transitions; nil logs nothing.
	Logger *slog.Logger

	beforeSync func() // tests: runs before each agent.Sync
}

// Status is what the follower knows of its manager.
type Status struct {
	Connected bool
	// Realized is the last feed revision the agent enforces.
	Realized int64
	// Error is the last failure (connect, sync or report), "" when the
	// last attempt worked.
	Error string
	// Refused says why the agent could not enforce the latest revision
	// it was given, until it enforces one; the host's health says it.
	Refused string
}

// Follower follows one manager for one agent.
type Follower struct {
	opts  Options
	host  string
	creds *client.Credentials
	c     *client.Client
	log   *slog.Logger

	cancel context.CancelFunc
	done   sync.WaitGroup

	mu       sync.Mutex
	status   Status
	statusCh chan struct{} // closed when status changes
	reportCh chan struct{} // a status or workload report is due (1-buffered)
	resend   bool          // report the workloads even if unchanged

	unreported []string     // this host's workloads the manager does not take, "namespace/name: why"
	read       atomic.Int64 // the last revision read from the watch (it may not be enforced yet)

	// The applier only (and Start):
	all       map[string]*api.HostWorkload // every host's workloads, by host/namespace/name
	remote    map[string]remoteWorkload    // those the agent holds, by namespace/name
	conflicts string                       // the last conflicts logged
}

// Start loads the credentials in opts.Dir, routes to the remote
// workloads the agent already holds (so that a restarted agent's hosts
// reach each other before the manager answers), and starts following.
func Start(ctx context.Context, opts Options) (*Follower, error) {
	if opts.Agent == nil || opts.URL == "" || opts.Dir == "" {
		return nil, errors.New("feed: Options.Agent, URL and Dir are required")
	}
	if opts.Backoff == nil {
		opts.Backoff = client.Backoff
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	creds, err := client.LoadCredentials(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("feed: %w; join first (bulkhead agent --manager URL --join-token T)", err)
	}
	if creds.Host != opts.Agent.Host() {
		return nil, fmt.Errorf("feed: the credentials in %s are for host %s, the agent is host %s", opts.Dir, creds.Host, opts.Agent.Host())
	}
	cert, err := creds.TLS()
	if err != nil {
		return nil, err
	}
	c, err := client.New(client.Config{URL: opts.URL, CA: creds.CA, Certificate: &cert, Timeout: opts.Timeout})
	if err != nil {
		return nil, err
	}
	f := &Follower{opts: opts, host: creds.Host, creds: creds, c: c, log: log.With("component", "feed", "manager", opts.URL),
		statusCh: make(chan struct{}), reportCh: make(chan struct{}, 1), resend: true}
	f.all, f.remote = heldRemote(opts.Agent, f.host)
	if next := f.loadPosition(); next > 0 {
		f.status.Realized = next - 1 // the agent restored what it enforced then
	}
	f.syncRoutes()
	ctx, f.cancel = context.WithCancel(context.WithoutCancel(ctx))
	f.done.Add(2)
	go func() { defer f.done.Done(); f.watchLoop(ctx) }()
	go func() { defer f.done.Done(); f.reportLoop(ctx) }()
	return f, nil
}

// Close stops following. Enforcement, routes and the state directory
// stay as they are.
func (f *Follower) Close() error {
	f.cancel()
	f.done.Wait()
	return nil
}

// readRev is the last revision read from the watch.
func (f *Follower) readRev() int64 { return f.read.Load() }

// Host is the host the credentials name.
func (f *Follower) Host() string { return f.host }

// Status returns the follower's status.
func (f *Follower) Status() Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

// WaitRealized waits until the agent enforces feed revision rev or later.
func (f *Follower) WaitRealized(ctx context.Context, rev int64) error {
	for {
		f.mu.Lock()
		realized, ch := f.status.Realized, f.statusCh
		f.mu.Unlock()
		if realized >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("feed: host %s realized revision %d, not %d: %w", f.host, realized, rev, ctx.Err())
		}
	}
}

// setStatus changes the status and asks for a status report.
func (f *Follower) setStatus(change func(*Status)) {
	f.mu.Lock()
	old := f.status
	change(&f.status)
	if f.status != old {
		close(f.statusCh)
		f.statusCh = make(chan struct{})
	}
	f.mu.Unlock()
	f.wake()
}

func (f *Follower) wake() {
	select {
	case f.reportCh <- struct{}{}:
	default:
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// apiErrorStatus is the HTTP status of a manager's error answer, 0 for
// anything else.
func apiErrorStatus(err error) int {
	var e *client.Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}
