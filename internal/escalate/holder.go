package escalate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// Defaults of Options.
const (
	DefaultTimeout             = 30 * time.Second
	DefaultMaxPending          = 1024
	DefaultMaxPendingPerSource = 256
	DefaultMaxRemembered       = 65536
)

// How long a decided connection's 5-tuple keeps its verdict, so that the
// copies its client resends are answered without asking again: a denied
// one for as long as a client retries a SYN (Linux gives up after about
// 127 s), an allowed one only for the copies already on their way (the
// connection is established in conntrack after the first), a failure
// briefly, so that a Decider back from an outage is asked again.
const (
	settleDenied  = 2 * time.Minute
	settleAllowed = 10 * time.Second
	settleFailed  = time.Second
)

// Options configure a Holder. Decider and Resolver are required; the rest
// has defaults.
type Options struct {
	// NetNS is the path of the network namespace whose queue to read
	// ("": the calling process's).
	NetNS string
	// QueueNum is the NFQUEUE number the dataplane queues to
	// (nft.Options.QueueNum).
	QueueNum uint16
	Decider  Decider
	Resolver Resolver
	Logger   *slog.Logger
	// Offload, when set, is given every remembered decision as a kernel
	// entry (see Offload).
	Offload Offload
	// Timeout is how long a connection waits for a decision when its rule
	// says nothing (0: DefaultTimeout).
	Timeout time.Duration
	// MaxPending bounds the connections held at once, MaxPendingPerSource
	// those of one source address once half of MaxPending are held (0:
	// the defaults). A packet beyond them fails closed at once.
	MaxPending, MaxPendingPerSource int
	// MaxRemembered bounds the remembered decisions (0: the default).
	MaxRemembered int
	// QueueLen is the kernel queue's length (0: MaxPending + 4096, room
	// for the held packets and a burst on its way to the Holder). A
	// packet beyond it is dropped by the kernel (CauseQueueFull).
	QueueLen uint32
}

// queue is the kernel's side: the NFQUEUE socket, or a fake in tests.
type queue interface {
	verdict(id uint32, v Verdict) error
	// kernelDrops returns the kernel's counts of packets it dropped
	// because the queue was full and because it could not deliver them.
	kernelDrops() (full, undelivered uint64, err error)
	close() error
}

// Holder holds escalated connections while a Decider decides. Its methods
// are safe for concurrent use. See the package doc and docs/escalate.md.
type Holder struct {
	opts   Options
	log    *slog.Logger
	q      queue
	ctx    context.Context // ends when the Holder closes
	cancel context.CancelFunc
	wg     sync.WaitGroup // askers and the watcher
	stop   chan struct{}

	mu        sync.Mutex
	closed    bool
	pending   map[Conn]*held
	perSource map[netip.Addr]int
	settled   settledSet
	memory    map[Key]Remembered
	n         counts
	failed    map[Cause]uint64
	watch     watchState
}

// counts are the Counters the Holder keeps itself.
type counts struct {
	queued, asked, allowed, denied, fromMemory, settled, timedOut, replaced uint64
	offloadFailed, rememberedFull                                           uint64
}

// held is one connection held: its newest packet waits in the kernel.
type held struct {
	conn      Conn
	id        uint32 // the packet held now; older copies were dropped
	seq       uint32 // its TCP sequence number
	since     time.Time
	onTimeout Verdict
	timer     *time.Timer
	cancel    context.CancelFunc
	key       Key // known once resolved
	keyed     bool
	done      bool
}

// outcome says how a held connection ended.
type outcome struct {
	cause    Cause // failed closed (the verdict is Deny)
	timeout  bool  // the rule's OnTimeout verdict
	memory   bool  // a remembered decision
	remember *Remembered
}

func newHolder(opts Options, q queue) (*Holder, error) {
	if opts.Decider == nil || opts.Resolver == nil {
		return nil, errors.New("escalate: new holder: a Decider and a Resolver are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxPending <= 0 {
		opts.MaxPending = DefaultMaxPending
	}
	if opts.MaxPendingPerSource <= 0 {
		opts.MaxPendingPerSource = DefaultMaxPendingPerSource
	}
	if opts.MaxRemembered <= 0 {
		opts.MaxRemembered = DefaultMaxRemembered
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Holder{opts: opts, log: opts.Logger.With("component", "escalate", "queue", opts.QueueNum),
		q: q, ctx: ctx, cancel: cancel, stop: make(chan struct{}),
		pending: map[Conn]*held{}, perSource: map[netip.Addr]int{}, memory: map[Key]Remembered{},
		settled: newSettledSet(4 * opts.MaxPending), failed: map[Cause]uint64{}}
	h.wg.Add(1)
	go h.watchLoop()
	return h, nil
}

// admit takes one packet from the queue. It runs on the queue's receive
// goroutine and never blocks on a Decider.
func (h *Holder) admit(id uint32, payload []byte) {
	conn, seq, perr := parseSeq(payload)
	now := time.Now()
	h.mu.Lock()
	h.n.queued++
	switch {
	case perr != nil:
		h.failLocked(CauseUnparsable)
	case h.closed:
		h.failLocked(CauseStopped)
	default:
		if v, ok := h.settled.get(conn, seq, now); ok {
			h.n.settled++
			h.countVerdictLocked(v)
			h.mu.Unlock()
			h.send(id, v)
			return
		}
		if p := h.pending[conn]; p != nil {
			old := p.id
			p.id, p.seq = id, seq
			h.n.replaced++
			h.mu.Unlock()
			h.send(old, Deny)
			return
		}
		// A source beyond its share is refused, unless the Holder is
		// mostly idle: it lends the first half of its room to anyone,
		// keeping the other half for the sources within their share.
		if h.perSource[conn.Src] >= h.opts.MaxPendingPerSource && len(h.pending) >= h.opts.MaxPending/2 {
			h.failLocked(CauseSourceLimit)
			break
		}
		if len(h.pending) >= h.opts.MaxPending {
			h.failLocked(CausePendingFull)
			break
		}
		h.holdLocked(conn, id, seq, now)
		h.mu.Unlock()
		return
	}
	h.mu.Unlock()
	h.send(id, Deny)
}

// holdLocked starts holding a new connection and asks about it.
func (h *Holder) holdLocked(conn Conn, id, seq uint32, now time.Time) {
	ctx, cancel := context.WithCancel(h.ctx)
	p := &held{conn: conn, id: id, seq: seq, since: now, cancel: cancel}
	p.timer = time.AfterFunc(h.opts.Timeout, func() { h.finish(p, Deny, outcome{timeout: true}) })
	h.pending[conn] = p
	h.perSource[conn.Src]++
	h.wg.Add(1)
	go h.ask(ctx, p)
}

// ask resolves the connection, answers it from memory or asks the
// Decider, and gives the verdict.
func (h *Holder) ask(ctx context.Context, p *held) {
	defer h.wg.Done()
	ends, err := h.opts.Resolver.Resolve(ctx, p.conn)
	if err != nil {
		h.finish(p, Deny, outcome{cause: CauseResolver})
		return
	}
	timeout := ends.Timeout
	if timeout <= 0 {
		timeout = h.opts.Timeout
	}
	deadline := p.since.Add(timeout)
	key, keyed := keyOf(p.conn, ends.Src)
	now := time.Now()
	h.mu.Lock()
	if p.done {
		h.mu.Unlock()
		return
	}
	p.onTimeout, p.key, p.keyed = ends.OnTimeout, key, keyed
	if ends.Timeout > 0 {
		p.timer.Reset(deadline.Sub(now))
	}
	if r, ok := h.memory[key]; keyed && ok && now.Before(r.Expires) {
		h.mu.Unlock()
		h.finish(p, r.Verdict, outcome{memory: true})
		return
	}
	h.n.asked++
	h.mu.Unlock()

	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	d, err := h.opts.Decider.Decide(dctx, Request{Conn: p.conn, Src: ends.Src, Dst: ends.Dst,
		Rule: ends.Rule, Held: p.since, Deadline: deadline})
	switch {
	case err == nil:
		var r *Remembered
		if d.Remember > 0 && keyed {
			r = &Remembered{Key: key, Verdict: d.Verdict, Expires: time.Now().Add(d.Remember), Reason: d.Reason}
		}
		if h.finish(p, d.Verdict, outcome{remember: r}) && r != nil && h.opts.Offload != nil {
			h.offload(*r)
		}
	case h.ctx.Err() != nil:
		h.finish(p, Deny, outcome{cause: CauseStopped})
	case dctx.Err() != nil:
		h.finish(p, Deny, outcome{timeout: true})
	default:
		h.finish(p, Deny, outcome{cause: CauseDecider})
	}
}

// keyOf is the remembered decisions' key of a connection; a source of
// unknown identity has none.
func keyOf(c Conn, src Endpoint) (Key, bool) {
	k := Key{SrcIdentity: src.Identity, Dst: c.Dst, Proto: c.Proto}
	if hasPorts(c.Proto) {
		k.Port = c.DstPort
	}
	return k, src.Identity != 0
}

// finish gives a held connection its verdict, once: it reports whether
// this call did (false: it had ended already). A timeout takes the
// connection's OnTimeout verdict; a decision to remember is kept, and
// answers the other held connections of its key at once.
func (h *Holder) finish(p *held, v Verdict, how outcome) bool {
	h.mu.Lock()
	if p.done {
		h.mu.Unlock()
		return false
	}
	if how.timeout {
		v = p.onTimeout
	}
	answers := []answer{h.endLocked(p, v, how)}
	if r := how.remember; r != nil {
		if _, ok := h.memory[r.Key]; ok || len(h.memory) < h.opts.MaxRemembered {
			h.memory[r.Key] = *r
			for _, o := range h.pending {
				if o.keyed && o.key == r.Key {
					answers = append(answers, h.endLocked(o, r.Verdict, outcome{memory: true}))
				}
			}
		} else {
			h.n.rememberedFull++
		}
	}
	h.mu.Unlock()
	for _, a := range answers {
		h.send(a.id, a.v)
	}
	return true
}

type answer struct {
	id uint32
	v  Verdict
}

// endLocked removes a held connection and counts how it ended; the caller
// sends the verdict.
func (h *Holder) endLocked(p *held, v Verdict, how outcome) answer {
	p.done = true
	p.timer.Stop()
	p.cancel()
	delete(h.pending, p.conn)
	if h.perSource[p.conn.Src]--; h.perSource[p.conn.Src] <= 0 {
		delete(h.perSource, p.conn.Src)
	}
	now := time.Now()
	switch {
	case how.cause == CauseStopped:
		h.failLocked(how.cause)
		return answer{p.id, Deny}
	case how.cause != "":
		h.failLocked(how.cause)
		h.settled.put(p.conn, p.seq, Deny, now.Add(settleFailed))
		return answer{p.id, Deny}
	case how.timeout:
		h.n.timedOut++
	case how.memory:
		h.n.fromMemory++
	}
	h.countVerdictLocked(v)
	ttl := settleDenied
	if v == Allow {
		ttl = settleAllowed
	}
	h.settled.put(p.conn, p.seq, v, now.Add(ttl))
	return answer{p.id, v}
}

func (h *Holder) countVerdictLocked(v Verdict) {
	if v == Allow {
		h.n.allowed++
	} else {
		h.n.denied++
	}
}

func (h *Holder) failLocked(c Cause) { h.failed[c]++ }

// send gives the kernel a verdict. A verdict that cannot be sent leaves
// the packet in the kernel's queue until the socket closes, when the
// kernel drops it: counted, on top of how it was decided.
func (h *Holder) send(id uint32, v Verdict) {
	if err := h.q.verdict(id, v); err != nil {
		h.mu.Lock()
		h.failLocked(CauseVerdict)
		h.watch.lastVerdictErr = err
		h.mu.Unlock()
	}
}

// offload installs a remembered decision as a kernel entry.
func (h *Holder) offload(r Remembered) {
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	if err := h.opts.Offload.Install(ctx, r); err != nil {
		h.mu.Lock()
		h.n.offloadFailed++
		h.watch.lastOffloadErr = err
		h.mu.Unlock()
	}
}

// Remembered lists the remembered decisions in force, in no order.
func (h *Holder) Remembered() []Remembered {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Remembered, 0, len(h.memory))
	for _, r := range h.memory {
		if now.Before(r.Expires) {
			out = append(out, r)
		}
	}
	return out
}

// Revoke forgets the remembered decision of k: the next connection of k is
// asked again. It reports whether one was remembered; an error is the
// Offload's, whose kernel entry may then still answer k until it expires.
func (h *Holder) Revoke(ctx context.Context, k Key) (bool, error) {
	h.mu.Lock()
	_, ok := h.memory[k]
	delete(h.memory, k)
	h.mu.Unlock()
	if h.opts.Offload != nil {
		if err := h.opts.Offload.Withdraw(ctx, k); err != nil {
			return ok, fmt.Errorf("escalate: revoke %s: withdraw the kernel entry: %w", k, err)
		}
	}
	return ok, nil
}

// Counters returns what the Holder has counted, with the kernel's drops.
func (h *Holder) Counters() Counters {
	full, undelivered, kerr := h.q.kernelDrops()
	h.mu.Lock()
	defer h.mu.Unlock()
	if kerr == nil { // the kernel's counts only grow while the queue is bound, and vanish when it closes
		h.watch.kernelFull = max(h.watch.kernelFull, full)
		h.watch.kernelUndelivered = max(h.watch.kernelUndelivered, undelivered)
	}
	c := Counters{Queued: h.n.queued, Asked: h.n.asked, Allowed: h.n.allowed, Denied: h.n.denied,
		FromMemory: h.n.fromMemory, Settled: h.n.settled, TimedOut: h.n.timedOut, Replaced: h.n.replaced,
		Pending: len(h.pending), Remembered: len(h.memory), OffloadFailed: h.n.offloadFailed,
		RememberedFull: h.n.rememberedFull, FailedClosed: map[Cause]uint64{}}
	for k, v := range h.failed {
		c.FailedClosed[k] = v
	}
	if h.watch.kernelFull > 0 {
		c.FailedClosed[CauseQueueFull] = h.watch.kernelFull
	}
	if h.watch.kernelUndelivered > 0 {
		c.FailedClosed[CauseUndelivered] = h.watch.kernelUndelivered
	}
	return c
}

// Close stops the Holder: every held connection is denied, the queue's
// socket closed (the kernel then drops what it still queued, and drops
// every later escalation: no listener, no bypass), and the Decider's
// contexts end. It waits for the Decider calls to return.
func (h *Holder) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	var answers []answer
	for _, p := range h.pending {
		answers = append(answers, h.endLocked(p, Deny, outcome{cause: CauseStopped}))
	}
	h.mu.Unlock()
	h.cancel()
	for _, a := range answers {
		h.send(a.id, a.v)
	}
	err := h.q.close()
	close(h.stop)
	h.wg.Wait()
	h.log.Info("stopped holding escalations: held connections denied, the kernel drops new ones",
		"denied", len(answers))
	if err != nil {
		return fmt.Errorf("escalate: close queue %d: %w", h.opts.QueueNum, err)
	}
	return nil
}
