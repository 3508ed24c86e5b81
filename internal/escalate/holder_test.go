package escalate

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeQueue stands for the kernel's queue: it records every verdict and
// fails the test when a packet is answered twice.
type fakeQueue struct {
	t        *testing.T
	mu       sync.Mutex
	verdicts map[uint32]Verdict
	answered chan uint32
	full     uint64
}

func newFakeQueue(t *testing.T) *fakeQueue {
	return &fakeQueue{t: t, verdicts: map[uint32]Verdict{}, answered: make(chan uint32, 10000)}
}

func (q *fakeQueue) verdict(id uint32, v Verdict) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if old, ok := q.verdicts[id]; ok {
		q.t.Errorf("packet %d answered twice: %s, then %s", id, old, v)
	}
	q.verdicts[id] = v
	q.answered <- id
	return nil
}

func (q *fakeQueue) kernelDrops() (uint64, uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.full, 0, nil
}

func (q *fakeQueue) close() error { return nil }

// wait returns the verdict of packet id, failing the test after within.
func (q *fakeQueue) wait(id uint32, within time.Duration) Verdict {
	q.t.Helper()
	deadline := time.Now().Add(within)
	for {
		q.mu.Lock()
		v, ok := q.verdicts[id]
		q.mu.Unlock()
		if ok {
			return v
		}
		if time.Now().After(deadline) {
			q.t.Fatalf("packet %d not answered within %v", id, within)
		}
		time.Sleep(time.Millisecond)
	}
}

// open reports whether packet id is still unanswered.
func (q *fakeQueue) open(id uint32) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.verdicts[id]
	return !ok
}

var (
	srcA = netip.MustParseAddr("10.9.0.1")
	srcB = netip.MustParseAddr("10.9.0.2")
	dst  = netip.MustParseAddr("10.9.0.3")
)

func syn(src netip.Addr, sport uint16) []byte {
	return ip4(protoTCP, src.String(), dst.String(), 5, ports(sport, 5432, 16))
}

func resolver() *FakeResolver {
	return &FakeResolver{Endpoints: map[netip.Addr]Endpoint{
		srcA: {Namespace: "app", Name: "a", Identity: 10, Labels: map[string]string{"app": "a"}},
		srcB: {Namespace: "app", Name: "b", Identity: 11},
		dst:  {Namespace: "app", Name: "db", Identity: 12, Image: "sha256:00"},
	}, Rule: "Policy/app/db/ingress/hold"}
}

func newTestHolder(t *testing.T, opts Options) (*Holder, *fakeQueue) {
	t.Helper()
	q := newFakeQueue(t)
	if opts.Resolver == nil {
		opts.Resolver = resolver()
	}
	h, err := newHolder(opts, q)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h, q
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("not within 2s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A held connection waits until the Decider answers, which sees both
// ends as resolved; its verdict is the Decider's.
func TestHeldUntilDecided(t *testing.T) {
	g := NewFakeOperator()
	h, q := newTestHolder(t, Options{Decider: g})
	h.admit(1, syn(srcA, 40000))
	h.admit(2, syn(srcB, 40000))
	eventually(t, "both asked", func() bool { return g.Count() == 2 })
	time.Sleep(50 * time.Millisecond)
	if !q.open(1) || !q.open(2) {
		t.Fatal("a connection was answered before the Decider decided")
	}
	g.Answer(Decision{Verdict: Allow})
	g.Answer(Decision{Verdict: Deny})
	v1, v2 := q.wait(1, time.Second), q.wait(2, time.Second)
	if v1 == v2 {
		t.Fatalf("verdicts %s and %s, want one allow and one deny", v1, v2)
	}
	r := g.Asked()[0]
	if r.Src.Name == "" || r.Dst.Name != "db" || r.Dst.Image != "sha256:00" || r.Rule != "Policy/app/db/ingress/hold" || r.Conn.DstPort != 5432 {
		t.Errorf("request %+v: ends not resolved", r)
	}
	if r.Deadline.Sub(r.Held) != DefaultTimeout {
		t.Errorf("deadline %v after held, want %v", r.Deadline.Sub(r.Held), DefaultTimeout)
	}
	c := h.Counters()
	if c.Queued != 2 || c.Asked != 2 || c.Allowed != 1 || c.Denied != 1 || c.Pending != 0 {
		t.Errorf("counters %+v", c)
	}
}

// A retransmitted SYN of a held connection is not asked again: the older
// copy is dropped, the newest held, and it gets the verdict. No packet is
// answered twice (fakeQueue fails the test otherwise).
func TestRetransmitReplacesHeldCopy(t *testing.T) {
	g := NewFakeOperator()
	h, q := newTestHolder(t, Options{Decider: g})
	for id := uint32(1); id <= 5; id++ {
		h.admit(id, syn(srcA, 40000))
	}
	for id := uint32(1); id <= 4; id++ {
		if v := q.wait(id, time.Second); v != Deny {
			t.Errorf("older copy %d: %s, want deny", id, v)
		}
	}
	if c := h.Counters(); c.Pending != 1 || c.Replaced != 4 {
		t.Errorf("counters %+v, want one held and four replaced", c)
	}
	g.Answer(Decision{Verdict: Allow})
	if v := q.wait(5, time.Second); v != Allow {
		t.Errorf("newest copy: %s, want allow", v)
	}
	if n := g.Count(); n != 1 {
		t.Errorf("asked %d times, want once", n)
	}
	// A copy that arrives after the decision gets the same verdict, unasked.
	h.admit(6, syn(srcA, 40000))
	if v := q.wait(6, time.Second); v != Allow || g.Count() != 1 {
		t.Errorf("late copy: %s after %d questions, want allow after 1", v, g.Count())
	}
}

// After the rule's timeout the connection gets its OnTimeout verdict, the
// Decider's context ends, and a later retransmission is answered the
// same way without asking again.
func TestTimeout(t *testing.T) {
	for _, onTimeout := range []Verdict{Deny, Allow} {
		g := NewFakeOperator()
		res := resolver()
		res.Timeout, res.OnTimeout = 80*time.Millisecond, onTimeout
		h, q := newTestHolder(t, Options{Decider: g, Resolver: res})
		start := time.Now()
		h.admit(1, syn(srcA, 40000))
		if v := q.wait(1, 2*time.Second); v != onTimeout {
			t.Errorf("onTimeout %s: verdict %s", onTimeout, v)
		}
		if d := time.Since(start); d < 80*time.Millisecond {
			t.Errorf("answered after %v, before the timeout", d)
		}
		h.admit(2, syn(srcA, 40000))
		if v := q.wait(2, time.Second); v != onTimeout || g.Count() != 1 {
			t.Errorf("retransmission after the timeout: %s, asked %d", v, g.Count())
		}
		if c := h.Counters(); c.TimedOut != 1 {
			t.Errorf("counters %+v, want one timed out", c)
		}
	}
}

// A Decider that fails, a Resolver that fails, a Holder that stops: the
// connection is denied and counted by cause; a state change is logged
// once, not per packet.
func TestFailClosed(t *testing.T) {
	var logs bytes.Buffer
	failing := DeciderFunc(func(context.Context, Request) (Decision, error) {
		return Decision{Verdict: Allow}, errors.New("manager unreachable")
	})
	h, q := newTestHolder(t, Options{Decider: failing, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	for id := uint32(1); id <= 20; id++ {
		h.admit(id, syn(srcA, uint16(40000+id)))
	}
	for id := uint32(1); id <= 20; id++ {
		if v := q.wait(id, time.Second); v != Deny {
			t.Fatalf("packet %d: %s with a failing Decider, want deny", id, v)
		}
	}
	h.watchOnce()
	for id := uint32(21); id <= 30; id++ { // failing on: no new line
		h.admit(id, syn(srcA, uint16(40000+id)))
		q.wait(id, time.Second)
	}
	h.watchOnce()
	if c := h.Counters(); c.FailedClosed[CauseDecider] != 30 {
		t.Errorf("counters %+v, want 30 failed closed by the decider", c)
	}
	if n := strings.Count(logs.String(), "decider-failed"); n != 1 {
		t.Errorf("%d log lines name the cause, want 1 (a transition):\n%s", n, logs.String())
	}
	h.watchOnce() // nothing failed since: the state ends, once
	h.watchOnce()
	h.watchOnce()
	if n := strings.Count(logs.String(), "decider-failed"); n != 2 {
		t.Errorf("%d log lines name the cause, want 2 (start and end):\n%s", n, logs.String())
	}

	res := resolver()
	res.Err = errors.New("no state yet")
	h2, q2 := newTestHolder(t, Options{Decider: AllowAll(0), Resolver: res})
	h2.admit(1, syn(srcA, 1))
	if v := q2.wait(1, time.Second); v != Deny || h2.Counters().FailedClosed[CauseResolver] != 1 {
		t.Errorf("failing resolver: %s, %+v", v, h2.Counters())
	}
	h2.admit(2, []byte{0x45, 0})
	if v := q2.wait(2, time.Second); v != Deny || h2.Counters().FailedClosed[CauseUnparsable] != 1 {
		t.Errorf("unparsable: %s, %+v", v, h2.Counters())
	}
}

// Closing the Holder denies what it holds, ends the Decider's contexts and
// denies whatever arrives after.
func TestCloseFailsClosed(t *testing.T) {
	g := NewFakeOperator()
	h, q := newTestHolder(t, Options{Decider: g})
	h.admit(1, syn(srcA, 1))
	h.admit(2, syn(srcB, 1))
	eventually(t, "asked", func() bool { return g.Count() == 2 })
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	h.admit(3, syn(srcA, 2))
	for id := uint32(1); id <= 3; id++ {
		if v := q.wait(id, time.Second); v != Deny {
			t.Errorf("packet %d: %s after close, want deny", id, v)
		}
	}
	if c := h.Counters(); c.FailedClosed[CauseStopped] != 3 || c.Pending != 0 {
		t.Errorf("counters %+v", c)
	}
}

// A source that floods escalations holds at most MaxPendingPerSource; the
// rest fail closed at once, and another source is asked and answered
// without waiting behind it. The Holder as a whole holds at most
// MaxPending.
func TestFairnessAndBounds(t *testing.T) {
	g := NewFakeOperator()
	quickB := DeciderFunc(func(ctx context.Context, r Request) (Decision, error) {
		if r.Conn.Src == srcB {
			return Decision{Verdict: Allow}, nil
		}
		return g.Decide(ctx, r)
	})
	h, q := newTestHolder(t, Options{Decider: quickB, MaxPending: 6, MaxPendingPerSource: 4})
	for id := uint32(1); id <= 50; id++ {
		h.admit(id, syn(srcA, uint16(1000+id)))
	}
	for id := uint32(5); id <= 50; id++ {
		if v := q.wait(id, time.Second); v != Deny {
			t.Fatalf("flood packet %d: %s, want deny", id, v)
		}
	}
	start := time.Now()
	h.admit(100, syn(srcB, 1))
	if v := q.wait(100, time.Second); v != Allow {
		t.Errorf("the other source: %s, want allow", v)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("the other source waited %v behind the flood", d)
	}
	c := h.Counters()
	if c.FailedClosed[CauseSourceLimit] != 46 || c.Pending != 4 {
		t.Errorf("counters %+v, want 46 over the source's limit and 4 held", c)
	}
	h.admit(101, ip4(protoUDP, "10.9.0.7", dst.String(), 5, ports(1, 53, 4)))
	h.admit(102, ip4(protoUDP, "10.9.0.8", dst.String(), 5, ports(1, 53, 4)))
	h.admit(103, ip4(protoUDP, "10.9.0.9", dst.String(), 5, ports(1, 53, 4)))
	if v := q.wait(103, time.Second); v != Deny || h.Counters().FailedClosed[CausePendingFull] != 1 || h.Counters().Pending != 6 {
		t.Errorf("%s, counters %+v, want pending-full once 6 are held", v, h.Counters())
	}
}

// A decision remembered for a TTL answers the same (source identity,
// destination, protocol, port) without asking, also the connections of
// that key already waiting; it is listed, installed into the Offload,
// and revoked with immediate effect.
func TestRemembered(t *testing.T) {
	g := NewFakeOperator()
	off := &FakeOffload{}
	h, q := newTestHolder(t, Options{Decider: g, Offload: off})
	h.admit(1, syn(srcA, 1))
	h.admit(2, syn(srcA, 2)) // the same key, another connection
	eventually(t, "asked", func() bool { return g.Count() == 2 })
	g.Answer(Decision{Verdict: Allow, Remember: time.Minute, Reason: "rule office-hours"})
	if v1, v2 := q.wait(1, time.Second), q.wait(2, time.Second); v1 != Allow || v2 != Allow {
		t.Errorf("the decided connection and the waiting one of the same key: %s, %s, want allow", v1, v2)
	}
	h.admit(3, syn(srcA, 3))
	if v := q.wait(3, time.Second); v != Allow || g.Count() != 2 {
		t.Errorf("remembered: %s after %d questions, want allow after 2", v, g.Count())
	}
	list := h.Remembered()
	key := Key{SrcIdentity: 10, Dst: dst, Proto: protoTCP, Port: 5432}
	if len(list) != 1 || list[0].Key != key || list[0].Verdict != Allow || list[0].Reason != "rule office-hours" {
		t.Fatalf("remembered %+v", list)
	}
	eventually(t, "offloaded", func() bool { return len(off.Installed()) == 1 })
	if got := off.Installed(); got[0].Key != key || got[0].Verdict != Allow {
		t.Errorf("offloaded %+v", got)
	}
	if ok, err := h.Revoke(context.Background(), key); !ok || err != nil {
		t.Fatalf("revoke: %v %v", ok, err)
	}
	if w := off.Withdrawn(); len(w) != 1 || w[0] != key {
		t.Errorf("withdrawn %+v", w)
	}
	h.admit(4, syn(srcA, 4))
	eventually(t, "asked again", func() bool { return g.Count() == 3 })
	if c := h.Counters(); c.FromMemory < 2 || c.Remembered != 0 {
		t.Errorf("counters %+v", c)
	}

	// An unknown source is never remembered: its identity would be 0,
	// shared by every stranger.
	h2, q2 := newTestHolder(t, Options{Decider: AllowAll(time.Minute)})
	unknown := netip.MustParseAddr("10.9.0.99")
	h2.admit(1, ip4(protoTCP, unknown.String(), dst.String(), 5, ports(1, 5432, 16)))
	h2.admit(2, syn(srcA, 1))
	q2.wait(1, time.Second)
	q2.wait(2, time.Second)
	if l := h2.Remembered(); len(l) != 1 || l[0].Key.SrcIdentity != 10 {
		t.Errorf("remembered %+v, want only identity 10's", l)
	}
}

// A kernel queue that overflowed is counted from the kernel's own count.
func TestQueueFullCountedFromKernel(t *testing.T) {
	h, q := newTestHolder(t, Options{Decider: AllowAll(0)})
	q.mu.Lock()
	q.full = 7
	q.mu.Unlock()
	if c := h.Counters(); c.FailedClosed[CauseQueueFull] != 7 {
		t.Errorf("counters %+v, want 7 queue-full", c)
	}
}

// A new TCP connection on the ports of one just decided (another initial
// sequence number) is asked, not answered as a copy of the old one.
func TestNewConnectionOnSamePortsIsAsked(t *testing.T) {
	n := 0
	var mu sync.Mutex
	d := DeciderFunc(func(context.Context, Request) (Decision, error) {
		mu.Lock()
		n++
		mu.Unlock()
		return Decision{Verdict: Allow}, nil
	})
	h, q := newTestHolder(t, Options{Decider: d})
	synSeq := func(seq uint32) []byte {
		l4 := ports(40000, 5432, 16)
		binary.BigEndian.PutUint32(l4[4:], seq)
		return ip4(protoTCP, srcA.String(), dst.String(), 5, l4)
	}
	h.admit(1, synSeq(1000))
	q.wait(1, time.Second)
	h.admit(2, synSeq(1000)) // a late copy: settled
	h.admit(3, synSeq(5000)) // a new connection: asked
	q.wait(2, time.Second)
	q.wait(3, time.Second)
	mu.Lock()
	defer mu.Unlock()
	if c := h.Counters(); n != 2 || c.Settled != 1 {
		t.Errorf("asked %d, counters %+v; want asked twice, one copy settled", n, c)
	}
}

// Under concurrent copies, decisions, failures, timeouts, remembered
// decisions and a Close in the middle, every packet is answered exactly
// once (fakeQueue fails the test otherwise) and the counts add up.
func TestEveryPacketAnsweredOnce(t *testing.T) {
	var seq atomic.Uint32
	d := DeciderFunc(func(ctx context.Context, r Request) (Decision, error) {
		n := seq.Add(1)
		select {
		case <-time.After(time.Duration(n%7) * time.Millisecond):
		case <-ctx.Done():
			return Decision{}, ctx.Err()
		}
		switch n % 5 {
		case 0:
			return Decision{}, errors.New("unreachable")
		case 1:
			return Decision{Verdict: Allow, Remember: 50 * time.Millisecond}, nil
		case 2:
			return Decision{Verdict: Deny}, nil
		}
		return Decision{Verdict: Allow}, nil
	})
	res := resolver()
	res.Timeout = 4 * time.Millisecond
	h, q := newTestHolder(t, Options{Decider: d, Resolver: res, MaxPending: 20, MaxPendingPerSource: 8})
	srcs := []netip.Addr{srcA, srcB, netip.MustParseAddr("10.9.0.50")}
	var wg sync.WaitGroup
	var next atomic.Uint32
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				id := next.Add(1)
				h.admit(id, syn(srcs[(g+i)%3], uint16(1+i%40))) // many copies of 120 connections
				if i%20 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(15 * time.Millisecond)
	h.Close()
	wg.Wait()
	total := next.Load()
	for id := uint32(1); id <= total; id++ {
		q.wait(id, 2*time.Second)
	}
	c := h.Counters()
	var failed uint64
	for _, n := range c.FailedClosed {
		failed += n
	}
	if c.Queued != uint64(total) || c.Allowed+c.Denied+c.Replaced+failed != c.Queued || c.Pending != 0 {
		t.Errorf("%d packets, counters %+v: do not add up", total, c)
	}
	if c.Replaced == 0 || c.Settled == 0 || c.TimedOut == 0 || c.FailedClosed[CauseStopped] == 0 {
		t.Logf("counters %+v: not every path taken in this run", c)
	} else {
		t.Logf("counters %+v", c)
	}
}

// A source may hold more than its share while the Holder is mostly idle
// (fewer than half of MaxPending held), so that a burst from one client
// is not refused for nothing; beyond that its share holds, and the other
// half stays for the other sources.
func TestIdleRoomLent(t *testing.T) {
	g := NewFakeOperator()
	h, q := newTestHolder(t, Options{Decider: g, MaxPending: 20, MaxPendingPerSource: 4})
	id := uint32(0)
	burst := func(src netip.Addr, n int) {
		for i := range n {
			id++
			h.admit(id, syn(src, uint16(100+i)))
		}
	}
	burst(srcA, 30)
	if c := h.Counters(); c.Pending != 10 || c.FailedClosed[CauseSourceLimit] != 20 {
		t.Fatalf("after a burst of 30 from one source: %+v, want 10 held (half of 20), 20 over its share", c)
	}
	burst(srcB, 5)
	if c := h.Counters(); c.Pending != 14 || c.FailedClosed[CauseSourceLimit] != 21 {
		t.Fatalf("after 5 from another: %+v, want its 4 held", c)
	}
	burst(netip.MustParseAddr("10.9.0.60"), 4)
	burst(netip.MustParseAddr("10.9.0.61"), 4)
	if c := h.Counters(); c.Pending != 20 || c.FailedClosed[CausePendingFull] != 2 {
		t.Fatalf("%+v, want 20 held and 2 beyond MaxPending", c)
	}
	if v := q.wait(id, time.Second); v != Deny {
		t.Errorf("beyond MaxPending: %s", v)
	}
}
