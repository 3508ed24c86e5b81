package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/flows"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// FlowOptions configure a managed agent's flow collection.
type FlowOptions struct {
	Agent *agent.Agent
	// URL and Dir are the manager and the credentials' directory, as in
	// Options: the batches go over the agent's mutual TLS.
	URL, Dir string
	// NetNS and LogGroup are the nft dataplane's (nft.Options);
	// Counters is the dataplane (*nft.Dataplane), for what the kernel's
	// log rate limit suppressed.
	NetNS    string
	LogGroup uint16
	Counters flows.CounterSource
	// StateDir holds the collector's spool (default Dir/../flows).
	StateDir string
	Logger   *slog.Logger
	// OnLog is flows.Config.OnLog.
	OnLog func(flows.LogEvent)
}

// StartFlows starts the collector of the agent's flows and sends them to
// the manager. It reads no conntrack UPDATE events (flows.Config.SkipUpdates):
// at high connection rates they overrun the event socket, and with the
// reliable delivery the collector asks for an overrun makes conntrack
// drop new connections until it catches up (docs/flows.md); collecting
// must never cost a workload its connections.
func StartFlows(opts FlowOptions) (*flows.Collector, error) {
	if opts.StateDir == "" {
		opts.StateDir = filepath.Join(filepath.Dir(opts.Dir), "flows")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c, err := flows.New(flows.Config{NetNS: opts.NetNS, LogGroup: opts.LogGroup, StateDir: opts.StateDir,
		Sink: &flowSink{url: opts.URL, dir: opts.Dir}, Resolver: newResolver(opts.Agent), Counters: opts.Counters,
		Host: opts.Agent.Host(), Logger: log, SkipUpdates: true, OnLog: opts.OnLog})
	if err != nil {
		return nil, fmt.Errorf("agent: start flow collection: %w", err)
	}
	return c, nil
}

// flowSink posts batches with the agent's credentials, loaded again
// after a refusal (the feed renews the certificate in Dir).
type flowSink struct {
	url, dir string
	mu       sync.Mutex
	c        *client.Client
}

func (s *flowSink) Send(ctx context.Context, b *flows.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c == nil {
		creds, err := client.LoadCredentials(s.dir)
		if err != nil {
			return err
		}
		if s.c, err = creds.Client(s.url); err != nil {
			return err
		}
	}
	err := client.FlowSink{Client: s.c}.Send(ctx, b)
	if errors.Is(err, fault.Forbidden) {
		s.c = nil
	}
	return err
}

// resolver names addresses from what the agent holds: its own workloads'
// registrations, the other hosts' workloads of the manager's feed, and
// the compiled state's identities and rules. Its table of addresses is
// rebuilt at most once a second.
type resolver struct {
	a     *agent.Agent
	mu    sync.Mutex
	built time.Time
	addrs map[netip.Addr]flows.Endpoint
}

func newResolver(a *agent.Agent) *resolver { return &resolver{a: a} }

func (r *resolver) Endpoint(addr netip.Addr) (flows.Endpoint, bool) {
	addr = addr.Unmap()
	r.mu.Lock()
	if time.Since(r.built) > time.Second {
		r.rebuild()
	}
	e, ok := r.addrs[addr]
	r.mu.Unlock()
	if st := r.a.State(); st != nil {
		e.Identity = uint32(st.Identity(addr))
	}
	e.Addr = addr
	return e, ok
}

func (r *resolver) rebuild() {
	m := map[netip.Addr]flows.Endpoint{}
	for _, w := range r.a.Workloads() {
		for _, ip := range w.IPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				m[a.Unmap()] = flows.Endpoint{Workload: w.Name, Namespace: w.Namespace}
			}
		}
	}
	_, remote := heldRemote(r.a, r.a.Host())
	for _, w := range remote {
		for _, a := range w.ips {
			m[a.Unmap()] = flows.Endpoint{Workload: w.name, Namespace: w.namespace}
		}
	}
	r.addrs, r.built = m, time.Now()
}

// Rule is the rule the compiled state finds for the connection: the
// destination's side if it decided, else the source's.
func (r *resolver) Rule(src, dst netip.Addr, proto uint8, dport uint16) string {
	st := r.a.State()
	if st == nil {
		return ""
	}
	v := compile.Lookup(st, policy.Probe{From: policy.Endpoint{Addr: src.Unmap()}, To: policy.Endpoint{Addr: dst.Unmap()},
		Protocol: policy.Protocol(proto), Port: int(dport)})
	for _, side := range []policy.Side{v.Ingress, v.Egress} {
		if side.Rule != nil {
			return side.Rule.ID
		}
	}
	return ""
}
