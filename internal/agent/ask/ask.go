// Package ask wires a managed agent's escalate path: it opens an
// escalate.Holder on the nftables dataplane's queue, identifies both ends
// of each held connection from what the agent holds (its compiled state
// and policy set: addresses → workloads, labels, identities; the rule that
// escalated by compile.Lookup), and asks the manager (POST
// /v1/escalations over the agent's mutual-TLS client) for the verdict.
// A manager that cannot be reached, or answers with an error, denies: the
// Holder counts it as failed closed (decider-failed).
//
//	a, err := ask.Start(ask.Options{Agent: ag, URL: managerURL, Dir: credDir, NetNS: hostNS, QueueNum: 0})
//	defer a.Close()
//	a.Counters() // the Holder's, for the agent's counters
package ask

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/escalate"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// DefaultTimeout is how long a connection is held for the manager: a
// little past the manager's default hold for an operator (2 min), so that
// the manager's onTimeout decides; a Linux client gives up its SYNs after
// about 127 s anyway.
const DefaultTimeout = 2*time.Minute + 5*time.Second

// DefaultMaxAsking bounds the questions one agent has open at the manager
// at once: half of the requests in flight the manager allows one host
// (manager.Limits.Requests, 32), so that connections held for operators
// never starve the host's workload and status reports.
const DefaultMaxAsking = 16

// Options configure Start. Agent, URL and Dir are required.
type Options struct {
	Agent *agent.Agent
	// URL is the manager's; Dir holds the agent's credentials
	// (feed.Join), read again whenever the certificate there changes.
	URL, Dir string
	// NetNS and QueueNum are the dataplane's (nft.Options).
	NetNS    string
	QueueNum uint16
	// Timeout is how long a connection waits for its decision (default
	// DefaultTimeout); it then gets deny.
	Timeout time.Duration
	// MaxAsking bounds the questions open at the manager at once (default
	// DefaultMaxAsking); past it a connection is denied at once, counted
	// as decider-failed.
	MaxAsking int
	Logger    *slog.Logger
	// Holder tunes the Holder (bounds); its NetNS, QueueNum, Resolver,
	// Decider, Timeout and Logger are set by Start.
	Holder escalate.Options
}

// Asker is a running escalate path.
type Asker struct {
	a   *agent.Agent
	h   *escalate.Holder
	res *resolver
	dec *decider
}

// Start opens the Holder. From then on the kernel's escalated
// connections are decided by the manager.
func Start(opts Options) (*Asker, error) {
	if opts.Agent == nil || opts.URL == "" || opts.Dir == "" {
		return nil, errors.New("ask: Options.Agent, URL and Dir are required")
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.MaxAsking <= 0 {
		opts.MaxAsking = DefaultMaxAsking
	}
	dec := &decider{url: opts.URL, dir: opts.Dir, host: opts.Agent.Host(), log: log.With("component", "ask"),
		asking: make(chan struct{}, opts.MaxAsking)}
	if _, err := dec.client(); err != nil {
		return nil, err
	}
	res := &resolver{a: opts.Agent, timeout: opts.Timeout}
	dec.res = res
	ho := opts.Holder
	ho.NetNS, ho.QueueNum, ho.Resolver, ho.Decider, ho.Timeout = opts.NetNS, opts.QueueNum, res, dec, opts.Timeout
	ho.Logger = log
	h, err := escalate.Open(ho)
	if err != nil {
		return nil, fmt.Errorf("ask: %w", err)
	}
	as := &Asker{h: h, res: res, dec: dec, a: opts.Agent}
	opts.Agent.SetEscalationCounters(as.APICounters)
	return as, nil
}

// Close closes the Holder: held connections are denied, and the kernel
// drops later escalations (nothing listens, no bypass).
func (a *Asker) Close() error {
	a.a.SetEscalationCounters(nil)
	return a.h.Close()
}

// Counters are the Holder's counters.
func (a *Asker) Counters() escalate.Counters { return a.h.Counters() }

// APICounters are the counters as the agent's API reports them.
func (a *Asker) APICounters() api.EscalationCounters {
	c := a.h.Counters()
	out := api.EscalationCounters{Queued: c.Queued, Asked: c.Asked, Allowed: c.Allowed, Denied: c.Denied,
		FromMemory: c.FromMemory, Settled: c.Settled, TimedOut: c.TimedOut, Replaced: c.Replaced,
		Pending: c.Pending, Remembered: c.Remembered}
	for k, v := range c.FailedClosed {
		if v > 0 {
			if out.FailedClosed == nil {
				out.FailedClosed = map[string]uint64{}
			}
			out.FailedClosed[string(k)] = v
		}
	}
	return out
}

// resolver identifies a held connection's ends from the agent's state.
type resolver struct {
	a       *agent.Agent
	timeout time.Duration

	mu    sync.Mutex
	set   *policy.Set // the set idx was built from
	idx   map[netip.Addr]*policy.Workload
	state *compile.State
}

// conflictPrefix marks a conflict class among the reasons in Ends.Rule.
const conflictPrefix = "conflict-class/"

// Resolve answers from memory: the state and set the agent enforces now.
// Ends.Rule lists the ids of the rules that escalate the connection now
// (and the conflict class), comma-separated; "" when the policy no longer
// escalates it, which the decider answers by the policy alone.
func (r *resolver) Resolve(_ context.Context, c escalate.Conn) (escalate.Ends, error) {
	st, idx := r.current()
	if st == nil {
		return escalate.Ends{}, errors.New("ask: no policy state yet")
	}
	src, dst := r.endpoint(st, idx, c.Src), r.endpoint(st, idx, c.Dst)
	v := compile.Lookup(st, probe(c, idx))
	var reasons []string
	for _, s := range []policy.Side{v.Egress, v.Ingress} {
		if s.Action == policy.Escalate && s.Rule != nil {
			reasons = append(reasons, s.Rule.ID)
		}
	}
	if v.ConflictClass != nil {
		reasons = append(reasons, conflictPrefix+v.ConflictClass.Name)
	}
	return escalate.Ends{Src: src, Dst: dst, Rule: strings.Join(reasons, ","), Timeout: r.timeout, OnTimeout: escalate.Deny}, nil
}

// current is the agent's state, and its workloads by address.
func (r *resolver) current() (*compile.State, map[netip.Addr]*policy.Workload) {
	st, set := r.a.State(), r.a.PolicySet()
	r.mu.Lock()
	defer r.mu.Unlock()
	if set != r.set {
		r.idx = map[netip.Addr]*policy.Workload{}
		if set != nil {
			for _, w := range set.Workloads {
				for _, ip := range w.IPs {
					r.idx[ip.Unmap()] = w
				}
			}
		}
		r.set = set
	}
	r.state = st
	return st, r.idx
}

func (r *resolver) endpoint(st *compile.State, idx map[netip.Addr]*policy.Workload, a netip.Addr) escalate.Endpoint {
	e := escalate.Endpoint{Addr: a, Identity: uint32(st.Identity(a.Unmap()))}
	if w := idx[a.Unmap()]; w != nil {
		e.Namespace, e.Name, e.Labels = w.Namespace, w.Name, w.Labels
	}
	return e
}

// probe is the connection as the policy judges it.
func probe(c escalate.Conn, idx map[netip.Addr]*policy.Workload) policy.Probe {
	p := policy.Probe{From: policy.Endpoint{Addr: c.Src.Unmap(), Workload: idx[c.Src.Unmap()]},
		To: policy.Endpoint{Addr: c.Dst.Unmap(), Workload: idx[c.Dst.Unmap()]}, Protocol: policy.Protocol(c.Proto), Port: int(c.DstPort)}
	if c.Proto == uint8(policy.ICMP) || c.Proto == uint8(policy.ICMPv6) {
		p.Port = int(c.ICMPType)<<8 | int(c.ICMPCode)
	}
	return p
}

// ruleRef reads a rule id (Kind/[namespace/]policy/direction/rule, as
// internal/objects makes them) into the manager's form.
func ruleRef(id string) (api.EscalationRuleRef, bool) {
	parts := strings.Split(id, "/")
	switch len(parts) {
	case 4:
		return api.EscalationRuleRef{Policy: parts[1], Rule: parts[3]}, true
	case 5:
		return api.EscalationRuleRef{Namespace: parts[1], Policy: parts[2], Rule: parts[4]}, true
	}
	return api.EscalationRuleRef{}, false
}

// decider asks the manager.
type decider struct {
	url, dir, host string
	log            *slog.Logger
	res            *resolver
	asking         chan struct{} // a slot per question open at the manager

	mu      sync.Mutex
	c       *client.Client
	certMod time.Time // of the certificate c was made with
}

// client is the manager client, made again when the agent's certificate
// was renewed (the feed renews it in dir).
func (d *decider) client() (*client.Client, error) {
	fi, err := os.Stat(filepath.Join(d.dir, client.CertFile))
	if err != nil {
		return nil, fmt.Errorf("ask: credentials: %w; join first", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.c != nil && fi.ModTime().Equal(d.certMod) {
		return d.c, nil
	}
	creds, err := client.LoadCredentials(d.dir)
	if err != nil {
		return nil, fmt.Errorf("ask: %w", err)
	}
	c, err := creds.Client(d.url)
	if err != nil {
		return nil, fmt.Errorf("ask: %w", err)
	}
	d.c, d.certMod = c, fi.ModTime()
	return c, nil
}

// Decide asks the manager, or, when the policy no longer escalates the
// connection, answers by the policy.
func (d *decider) Decide(ctx context.Context, r escalate.Request) (escalate.Decision, error) {
	req := api.EscalationRequest{Protocol: policy.Protocol(r.Conn.Proto).String(), Source: apiEndpoint(r.Src), Destination: apiEndpoint(r.Dst),
		SourcePort: int(r.Conn.SrcPort), Port: int(r.Conn.DstPort), Held: r.Held, Deadline: r.Deadline}
	if r.Conn.Proto == uint8(policy.ICMP) || r.Conn.Proto == uint8(policy.ICMPv6) {
		req.SourcePort, req.Port = 0, int(r.Conn.ICMPType)<<8|int(r.Conn.ICMPCode)
	}
	for _, id := range strings.Split(r.Rule, ",") {
		if cc, ok := strings.CutPrefix(id, conflictPrefix); ok {
			req.ConflictClass = cc
		} else if ref, ok := ruleRef(id); ok {
			req.Rules = append(req.Rules, ref)
		}
	}
	if len(req.Rules) == 0 && req.ConflictClass == "" {
		return d.byPolicy(r)
	}
	select {
	case d.asking <- struct{}{}:
		defer func() { <-d.asking }()
	default:
		return escalate.Decision{}, fmt.Errorf("ask: %d questions are open at the manager already", cap(d.asking))
	}
	c, err := d.client()
	if err != nil {
		return escalate.Decision{}, err
	}
	ans, err := c.Escalate(ctx, req)
	if err != nil {
		return escalate.Decision{}, fmt.Errorf("ask: the manager: %w", err)
	}
	dec := escalate.Decision{Verdict: escalate.Deny, Reason: "manager " + ans.ID + ": " + ans.Reason}
	if ans.Verdict == api.VerdictAllow {
		dec.Verdict = escalate.Allow
	}
	if ans.Remember != "" {
		if dec.Remember, err = time.ParseDuration(ans.Remember); err != nil {
			dec.Remember = 0
		}
	}
	return dec, nil
}

// byPolicy answers a connection that the policy in force no longer
// escalates (it changed while the packet was queued) by that policy.
func (d *decider) byPolicy(r escalate.Request) (escalate.Decision, error) {
	st, idx := d.res.current()
	if st == nil {
		return escalate.Decision{}, errors.New("ask: no policy state")
	}
	v := compile.Lookup(st, probe(r.Conn, idx))
	if v.Action == policy.Allow {
		return escalate.Decision{Verdict: escalate.Allow, Reason: "the policy in force allows it"}, nil
	}
	return escalate.Decision{Verdict: escalate.Deny, Reason: "the policy in force says " + string(v.Action)}, nil
}

func apiEndpoint(e escalate.Endpoint) api.EscalationEndpoint {
	return api.EscalationEndpoint{Address: e.Addr.Unmap().String(), Namespace: e.Namespace, Name: e.Name, Labels: e.Labels,
		Identity: e.Identity, Image: e.Image}
}
