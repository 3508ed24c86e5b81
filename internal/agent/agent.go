// Package agent is Bulkhead's host agent: one reconcile loop that owns the
// host's desired state — the applied policy objects and the registered
// local workloads — compiles it incrementally (internal/compile) and makes
// a dataplane.Dataplane enforce it, and the local API (api/agent.go) on a
// unix socket through which the CLI applies objects and attachments (the
// CNI plugin, the Docker driver) register workloads.
//
// Every change is validated whole (the existing objects with the request,
// as `bulkhead check` does, walls proven) before anything changes; a
// request is answered only once the dataplane enforces its result, so a
// registered workload sees drops, never an open window. The state is kept
// in a directory and applied again at start, so that a restarted agent
// converges (and the nftables dataplane adopts the table it finds).
//
// In-process use (tests, benchmarks, the CNI plugin's tests):
//
//	a, err := agent.Start(ctx, agent.Options{
//		StateDir:  dir,
//		Socket:    filepath.Join(dir, "agent.sock"), // "" serves no socket
//		Dataplane: dp,                               // owned by the agent from now on
//	})
//	defer a.Close()
//	res, err := a.Apply(ctx, api.ApplyRequest{Documents: docs})
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Options configure an agent.
type Options struct {
	// StateDir keeps the objects and registrations; required. It is
	// locked while the agent runs.
	StateDir string
	// Socket is the unix socket of the local API. Empty: no socket; the
	// agent is used through its methods only.
	Socket string
	// Host is this host's name, the Host of every registered workload.
	// Empty: os.Hostname().
	Host string
	// Dataplane enforces the state; required. The agent owns it: Close
	// (and a failed Start) closes it, leaving enforcement in place.
	Dataplane dataplane.Dataplane
	// Logger receives state transitions; nil logs nothing.
	Logger *slog.Logger
	// Manager names the manager this agent follows ("": standalone). A
	// managed agent takes its objects from the manager's feed (Sync);
	// Apply and Delete are refused, so that the two never disagree.
	Manager string
}

// Agent is a running host agent. Its methods are safe for concurrent
// use; changes are serialised by the one reconcile loop.
type Agent struct {
	host   string
	log    *slog.Logger
	dp     dataplane.Dataplane
	state  *stateDir
	socket string
	uid    int // the uid besides root that may use the API

	reqs     chan *request
	quit     chan struct{}
	loopDone chan struct{}
	snap     atomic.Pointer[snapshot]
	docSeq   atomic.Int64

	srv      *http.Server
	ln       *net.UnixListener
	served   chan struct{}
	closeErr error
	closing  sync.Once

	manager     string                                        // Options.Manager
	escCounters atomic.Pointer[func() api.EscalationCounters] // SetEscalationCounters
	changed     changeNotifier                                // for Changed
	wlocks      keyLocks                                      // serialise (un)registrations of one workload name

	l loopState // owned by the loop goroutine
}

// Start loads the state dir, makes the dataplane enforce what it holds,
// and then (only then) starts serving. It fails, and leaves nothing
// running, when the state dir is corrupt or in use, the state does not
// validate, or the dataplane refuses it.
func Start(ctx context.Context, opts Options) (a *Agent, err error) {
	if opts.Dataplane == nil {
		return nil, errors.New("agent: no dataplane given")
	}
	defer func() {
		if err != nil {
			opts.Dataplane.Close()
		}
	}()
	host := opts.Host
	if host == "" {
		if host, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("agent: host name: %w", err)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a = &Agent{host: host, log: log.With("component", "agent"), dp: opts.Dataplane, socket: opts.Socket, manager: opts.Manager,
		uid: os.Getuid(), reqs: make(chan *request, 256), quit: make(chan struct{}), loopDone: make(chan struct{})}
	state, err := openStateDir(opts.StateDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			state.close()
		}
	}()
	a.state = state
	if err := a.restore(ctx); err != nil {
		return nil, err
	}
	if opts.Socket != "" {
		if a.ln, err = listen(opts.Socket); err != nil {
			return nil, err
		}
		a.srv = a.server()
		a.served = make(chan struct{})
		go func() {
			defer close(a.served)
			if err := a.srv.Serve(a.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("serve", "socket", opts.Socket, "err", err)
			}
		}()
	}
	a.log.Info("agent started", "host", host, "socket", opts.Socket, "stateDir", opts.StateDir,
		"revision", a.l.rev, "objects", len(a.l.objects), "workloads", len(a.l.regs))
	go a.loop() // from here on, only the loop touches a.l
	return a, nil
}

// Run starts an agent and serves until ctx ends, then closes it.
func Run(ctx context.Context, opts Options) error {
	a, err := Start(ctx, opts)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return a.Close()
}

// Close stops serving (waiting up to 10 s for requests in flight), stops
// the loop and closes the dataplane, which leaves enforcement in the
// kernel for the next agent to adopt. It is idempotent.
func (a *Agent) Close() error {
	a.closing.Do(func() {
		var errs []error
		if a.srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := a.srv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("agent: stop serving: %w", err))
				a.srv.Close()
			}
			cancel()
			<-a.served
			if err := os.Remove(a.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("agent: remove socket: %w", err))
			}
		}
		close(a.quit)
		<-a.loopDone
		if err := a.dp.Close(); err != nil {
			errs = append(errs, fmt.Errorf("agent: close dataplane: %w", err))
		}
		errs = append(errs, a.state.close())
		a.closeErr = errors.Join(errs...)
		a.log.Info("agent stopped", "revision", a.snap.Load().rev)
	})
	return a.closeErr
}

// Host is the host name the agent gives its registered workloads.
func (a *Agent) Host() string { return a.host }

// Socket is the socket path the agent serves ("" when none).
func (a *Agent) Socket() string { return a.socket }

// Error is how the agent fails: a fault.Error, whose kind the socket
// turns into a status and whose cause stays reachable with errors.Is.
type Error = fault.Error

func newError(kind error, details []string, format string, args ...any) *Error {
	return fault.New(kind, details, format, args...)
}

var errClosed = newError(fault.Unavailable, nil, "agent: shutting down")

// Apply adds or updates the objects of req's documents and returns once
// the dataplane enforces the result. Nothing changes when anything is
// wrong: the error (an *Error) lists every problem with its place.
func (a *Agent) Apply(ctx context.Context, req api.ApplyRequest) (api.ApplyResult, error) {
	return a.changeObjects(ctx, opApply, req)
}

// Delete removes the objects req's documents name and returns once the
// dataplane enforces the result.
func (a *Agent) Delete(ctx context.Context, req api.ApplyRequest) (api.ApplyResult, error) {
	return a.changeObjects(ctx, opDelete, req)
}

func (a *Agent) changeObjects(ctx context.Context, op opKind, req api.ApplyRequest) (api.ApplyResult, error) {
	if a.manager != "" {
		return api.ApplyResult{}, newError(fault.Conflict, nil, "agent: this agent follows the manager at %s and takes its objects from there; %s them on the manager (bulkhead --server %s %s -f ...)", a.manager, op, a.manager, op)
	}
	start := time.Now()
	if len(req.Documents) == 0 {
		return api.ApplyResult{}, newError(fault.BadRequest, nil, "agent: no documents given")
	}
	var (
		objs    []*object
		details []string
		seen    = map[api.ObjectRef]*object{}
	)
	for _, d := range req.Documents {
		doc := &document{name: d.Name, data: d.Data, seq: a.docSeq.Add(1)}
		parsed, errs := parseDocument(doc)
		errs.Err() // sorts by position
		for _, e := range errs {
			details = append(details, e.Error())
		}
		for _, o := range parsed {
			if first, dup := seen[o.ref]; dup {
				details = append(details, fmt.Sprintf("%s: %s is given twice (first in %s); give each object once", d.Name, refString(o.ref), first.doc.name))
				continue
			}
			seen[o.ref] = o
			objs = append(objs, o)
		}
	}
	if len(details) > 0 {
		return api.ApplyResult{}, newError(fault.Invalid, details, "agent: %s refused: the documents do not read", op)
	}
	if len(objs) == 0 {
		return api.ApplyResult{}, newError(fault.BadRequest, nil, "agent: %s: the documents hold no object", op)
	}
	r, err := a.send(ctx, &request{op: op, start: start, objs: objs, dryRun: req.DryRun})
	return r.result, err
}

func (a *Agent) send(ctx context.Context, r *request) (reply, error) {
	r.ctx = ctx
	r.done = make(chan reply, 1)
	select {
	case a.reqs <- r:
	case <-a.quit:
		return reply{}, errClosed
	case <-ctx.Done():
		return reply{}, ctx.Err()
	}
	select {
	case rep := <-r.done:
		return rep, rep.err
	case <-a.loopDone:
		return reply{}, errClosed
	}
}

// Objects lists the applied objects, of the given kinds when kinds is not
// empty, as apply accepted them.
func (a *Agent) Objects(kinds ...string) api.ObjectList {
	s := a.snap.Load()
	want := map[string]bool{}
	for _, k := range kinds {
		want[k] = true
	}
	l := api.ObjectList{Revision: s.rev, Items: []map[string]any{}}
	unpacked := map[*document][]byte{}
	for _, o := range s.objects {
		if len(want) == 0 || want[o.ref.Kind] {
			l.Items = append(l.Items, jsonValue(o.canonical(unpacked)))
		}
	}
	return l
}

// Workloads lists the registered workloads.
func (a *Agent) Workloads() []api.WorkloadRegistration {
	s := a.snap.Load()
	out := make([]api.WorkloadRegistration, 0, len(s.regs))
	for _, r := range s.regs {
		out = append(out, r.api)
	}
	return out
}

// Revision is the number of the last change; it grows with every change
// and survives restarts.
func (a *Agent) Revision() int64 { return a.snap.Load().rev }

// Status reports the agent's state.
func (a *Agent) Status() api.AgentStatus {
	s := a.snap.Load()
	st := api.AgentStatus{Host: a.host, Revision: s.rev, Workloads: len(s.set.Workloads), Policies: len(s.set.Policies),
		MemoryBytes: heapInUse(), NetNS: a.statusNetNS()}
	if f, ok := a.dp.(interface{ Features() map[string]string }); ok {
		st.Features = f.Features()
	}
	if e, ok := a.dp.(interface{ Elements() map[string]int }); ok {
		st.Elements = e.Elements()
	}
	return st
}

// Counters reads the dataplane's counters.
func (a *Agent) Counters(ctx context.Context) (api.Counters, error) {
	c, err := a.dp.Counters(ctx)
	if err != nil {
		return api.Counters{}, newError(fault.Unavailable, nil, "agent: read counters: %w", err)
	}
	out := api.Counters{Rules: map[string]api.Counter{}, Spoofed: api.Counter(c.Spoofed)}
	for k, v := range c.Rules {
		out.Rules[k] = api.Counter(v)
	}
	if len(c.Walls) > 0 {
		out.Walls = map[string]api.Counter{}
		for k, v := range c.Walls {
			out.Walls[k] = api.Counter(v)
		}
	}
	if f := a.escCounters.Load(); f != nil {
		ec := (*f)()
		out.Escalations = &ec
	}
	return out, nil
}

// SetEscalationCounters makes Counters report the escalate path's
// counters, as f reads them (nil: none).
func (a *Agent) SetEscalationCounters(f func() api.EscalationCounters) {
	if f == nil {
		a.escCounters.Store(nil)
		return
	}
	a.escCounters.Store(&f)
}

// State is the compiled state in force (for tests and benchmarks).
func (a *Agent) State() *compile.State { return a.snap.Load().state }

// PolicySet is the whole set in force: objects and registered workloads.
func (a *Agent) PolicySet() *policy.Set { return a.snap.Load().set }
