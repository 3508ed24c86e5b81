package escalate

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

const (
	testQueue = 7
	heldPort  = 5432 // escalated by the test table
	freePort  = 8080 // not escalated
)

// A connection is held, unanswered, until the Decider allows it, and is
// then established; its traffic never comes back to the queue. TCP over
// IPv4 and IPv6, UDP and ICMP echo are all read as their connection.
func TestKernelHeldUntilAllowed(t *testing.T) {
	h := newKHost(t, "a", "s")
	a, s := h.wls["a"], h.wls["s"]
	s.listen(t, heldPort)
	h.queueRules(testQueue, heldPort)
	g := NewFakeOperator()
	var allowAll atomic.Bool
	d := DeciderFunc(func(ctx context.Context, r Request) (Decision, error) {
		if allowAll.Load() {
			return Decision{Verdict: Allow}, nil
		}
		return g.Decide(ctx, r)
	})
	hd := h.open(Options{QueueNum: testQueue, Decider: d, Resolver: h.resolverFor()})

	for i, dst := range []netip.Addr{s.v4, s.v6} {
		done := make(chan error, 1)
		var conn net.Conn
		go func() {
			c, err := a.dial(dst, heldPort, 5*time.Second)
			conn = c
			done <- err
		}()
		eventually(t, "asked", func() bool { return g.Count() == i+1 })
		select {
		case err := <-done:
			t.Fatalf("connection to %s finished before the decision: %v", dst, err)
		case <-time.After(300 * time.Millisecond):
		}
		g.Answer(Decision{Verdict: Allow})
		if err := <-done; err != nil {
			t.Fatalf("connection to %s after allow: %v", dst, err)
		}
		for range 3 {
			if err := echo(conn, "established", 2*time.Second); err != nil {
				t.Fatalf("established traffic to %s: %v", dst, err)
			}
		}
		conn.Close()
		r := g.Asked()[i]
		if r.Conn.Proto != protoTCP || r.Conn.DstPort != heldPort || !r.Conn.Dst.IsValid() ||
			r.Src.Name != "a" || r.Dst.Name != "s" || r.Conn.Src.Is4() != (i == 0) {
			t.Errorf("request %+v", r)
		}
	}

	// UDP and ICMP: allowed at once, each read as its connection.
	allowAll.Store(true)
	if err := a.udp(s.v4, heldPort, 2*time.Second); err != nil {
		t.Errorf("udp after allow: %v", err)
	}
	if !ping(t, a, s.v4) || !ping(t, a, s.v6) {
		t.Errorf("ping after allow: no reply")
	}
	if c := hd.Counters(); c.Asked != 5 || c.Allowed < 5 || c.Pending != 0 {
		t.Errorf("counters %+v, want 5 asked and allowed", c)
	}
}

// A denied connection never opens, and its retransmitted SYN is answered
// without asking again. A connection whose rule times out gets its
// OnTimeout verdict: deny.
func TestKernelDeniedAndTimedOut(t *testing.T) {
	h := newKHost(t, "a", "s")
	a, s := h.wls["a"], h.wls["s"]
	s.listen(t, heldPort)
	h.queueRules(testQueue, heldPort)
	var asked atomic.Int32
	deny := DeciderFunc(func(context.Context, Request) (Decision, error) {
		asked.Add(1)
		return Decision{Verdict: Deny}, nil
	})
	hd := h.open(Options{QueueNum: testQueue, Decider: deny, Resolver: h.resolverFor()})
	if c, err := a.dial(s.v4, heldPort, 2500*time.Millisecond); err == nil { // the SYN is resent after 1 s
		c.Close()
		t.Fatal("a denied connection opened")
	}
	c := hd.Counters()
	if asked.Load() != 1 || c.Denied < 2 || c.Settled < 1 {
		t.Errorf("asked %d times, counters %+v; want asked once and the retransmission denied unasked", asked.Load(), c)
	}
	hd.Close()

	res := h.resolverFor()
	res.Timeout = 400 * time.Millisecond
	g := NewFakeOperator()
	hd = h.open(Options{QueueNum: testQueue, Decider: g, Resolver: res})
	start := time.Now()
	if c, err := a.dial(s.v4, heldPort, 2*time.Second); err == nil {
		c.Close()
		t.Fatal("a connection opened without a decision")
	}
	if c := hd.Counters(); c.TimedOut != 1 || c.Denied < 1 || g.Count() != 1 {
		t.Errorf("counters %+v after %v, asked %d; want one timed out to deny", c, time.Since(start), g.Count())
	}
}

// A Decider that takes longer than TCP's first retransmission (a person)
// still lets the connection through: the retransmitted SYN replaces the
// held one, unasked, and is the one allowed.
func TestKernelSlowDecider(t *testing.T) {
	h := newKHost(t, "a", "s")
	a, s := h.wls["a"], h.wls["s"]
	s.listen(t, heldPort)
	h.queueRules(testQueue, heldPort)
	g := NewFakeOperator()
	hd := h.open(Options{QueueNum: testQueue, Decider: g, Resolver: h.resolverFor()})
	done := make(chan error, 1)
	go func() {
		c, err := a.dial(s.v4, heldPort, 10*time.Second)
		if err == nil {
			err = echo(c, "late", 2*time.Second)
			c.Close()
		}
		done <- err
	}()
	eventually(t, "asked", func() bool { return g.Count() == 1 })
	eventually(t, "a retransmission held", func() bool { return hd.Counters().Replaced >= 1 })
	g.Answer(Decision{Verdict: Allow})
	if err := <-done; err != nil {
		t.Fatalf("connection after a slow allow: %v", err)
	}
	if c := hd.Counters(); g.Count() != 1 || c.Pending != 0 {
		t.Errorf("asked %d, counters %+v", g.Count(), c)
	}
}

// A remembered decision answers the next connections of its key without
// asking; revoked, the next one is asked again.
func TestKernelRemembered(t *testing.T) {
	h := newKHost(t, "a", "s")
	a, s := h.wls["a"], h.wls["s"]
	s.listen(t, heldPort)
	h.queueRules(testQueue, heldPort)
	var asked atomic.Int32
	d := DeciderFunc(func(context.Context, Request) (Decision, error) {
		asked.Add(1)
		return Decision{Verdict: Allow, Remember: time.Minute, Reason: "test"}, nil
	})
	hd := h.open(Options{QueueNum: testQueue, Decider: d, Resolver: h.resolverFor()})
	for range 5 {
		c, err := a.dial(s.v4, heldPort, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if n := asked.Load(); n != 1 {
		t.Fatalf("asked %d times, want once", n)
	}
	list := hd.Remembered()
	if len(list) != 1 {
		t.Fatalf("remembered %+v", list)
	}
	if ok, err := hd.Revoke(context.Background(), list[0].Key); !ok || err != nil {
		t.Fatal(ok, err)
	}
	c, err := a.dial(s.v4, heldPort, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if n := asked.Load(); n != 2 {
		t.Errorf("asked %d times after the revocation, want 2", n)
	}
}

// With the Holder stopped, or flooded by one source, escalated
// connections fail closed, while an established connection and another
// source are untouched.
func TestKernelFailClosed(t *testing.T) {
	h := newKHost(t, "a", "b", "s")
	a, b, s := h.wls["a"], h.wls["b"], h.wls["s"]
	s.listen(t, heldPort)
	s.listen(t, freePort)
	h.queueRules(testQueue, heldPort)
	g := NewFakeOperator()
	res := h.resolverFor()
	quickB := DeciderFunc(func(ctx context.Context, r Request) (Decision, error) {
		if r.Src.Name == "b" {
			return Decision{Verdict: Allow}, nil
		}
		return g.Decide(ctx, r)
	})
	hd := h.open(Options{QueueNum: testQueue, Decider: quickB, Resolver: res, MaxPending: 8, MaxPendingPerSource: 4})

	established, err := b.dial(s.v4, heldPort, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer established.Close()

	// a floods: 40 connections at once, 4 held, the rest fail closed.
	var wg sync.WaitGroup
	var opened atomic.Int32
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c, err := a.dial(s.v4, heldPort, 1500*time.Millisecond); err == nil {
				opened.Add(1)
				c.Close()
			}
		}()
	}
	eventually(t, "the flood held", func() bool { return hd.Counters().FailedClosed[CauseSourceLimit] >= 30 })
	start := time.Now()
	c, err := b.dial(s.v4, heldPort, 2*time.Second)
	if err != nil {
		t.Fatalf("another source during the flood: %v", err)
	}
	c.Close()
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("another source waited %v during the flood", d)
	}
	if err := echo(established, "during the flood", 2*time.Second); err != nil {
		t.Errorf("established connection during the flood: %v", err)
	}
	wg.Wait()
	if n := opened.Load(); n != 0 {
		t.Errorf("%d of the flood's connections opened", n)
	}
	if c := hd.Counters(); c.Pending > 4 {
		t.Errorf("counters %+v: more held than a source may", c)
	}

	// Stopped: held connections are denied, new ones dropped by the
	// kernel (no listener, no bypass); the rest is untouched.
	hd.Close()
	if c, err := a.dial(s.v4, heldPort, 1200*time.Millisecond); err == nil {
		c.Close()
		t.Error("an escalated connection opened with the Holder stopped")
	} else if !isTimeout(err) {
		t.Errorf("escalated connection with the Holder stopped: %v, want a timeout", err)
	}
	if err := echo(established, "after the stop", 2*time.Second); err != nil {
		t.Errorf("established connection after the stop: %v", err)
	}
	if c, err := a.dial(s.v4, freePort, 2*time.Second); err != nil {
		t.Errorf("a connection that is not escalated, with the Holder stopped: %v", err)
	} else {
		c.Close()
	}
}

// A kernel queue too short for what arrives drops the excess in the
// kernel, and the Holder counts those drops from the kernel's own count.
func TestKernelQueueFull(t *testing.T) {
	h := newKHost(t, "a", "s")
	a, s := h.wls["a"], h.wls["s"]
	s.listen(t, heldPort)
	h.queueRules(testQueue, heldPort)
	g := NewFakeOperator()
	hd := h.open(Options{QueueNum: testQueue, Decider: g, Resolver: h.resolverFor(), QueueLen: 3})
	var wg sync.WaitGroup
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c, err := a.dial(s.v4, heldPort, 700*time.Millisecond); err == nil {
				c.Close()
			}
		}()
	}
	eventually(t, "the queue overflowed", func() bool { return hd.Counters().FailedClosed[CauseQueueFull] > 0 })
	wg.Wait()
	if c := hd.Counters(); c.Pending > 3 {
		t.Errorf("counters %+v: more held than the queue holds", c)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ping sends one echo request from w to dst through a ping socket and
// reports whether the reply came.
func ping(t *testing.T, w *kWorkload, dst netip.Addr) bool {
	t.Helper()
	network, typ, proto := "udp4", icmp.Type(ipv4.ICMPTypeEcho), 1
	if dst.Is6() {
		network, typ, proto = "udp6", ipv6.ICMPTypeEchoRequest, 58
	}
	var c *icmp.PacketConn
	if err := w.ns.Do(func() error {
		var err error
		c, err = icmp.ListenPacket(network, "")
		return err
	}); err != nil {
		t.Fatalf("ping socket in %s: %v", w.name, err)
	}
	defer c.Close()
	msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: 1, Seq: 1, Data: []byte("bulkhead")}}
	b, _ := msg.Marshal(nil)
	if _, err := c.WriteTo(b, &net.UDPAddr{IP: dst.AsSlice()}); err != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return false
		}
		if m, err := icmp.ParseMessage(proto, buf[:n]); err == nil &&
			(m.Type == ipv4.ICMPTypeEchoReply || m.Type == ipv6.ICMPTypeEchoReply) {
			return true
		}
	}
}

// A queue has one reader: a second Holder on it is refused, and the first
// keeps holding.
func TestKernelQueueBoundOnce(t *testing.T) {
	h := newKHost(t, "a", "s")
	a, s := h.wls["a"], h.wls["s"]
	s.listen(t, heldPort)
	h.queueRules(testQueue, heldPort)
	h.open(Options{QueueNum: testQueue, Decider: AllowAll(0), Resolver: h.resolverFor()})
	if second, err := Open(Options{NetNS: h.ns.Path(), QueueNum: testQueue, Decider: AllowAll(0), Resolver: h.resolverFor()}); err == nil {
		second.Close()
		t.Fatal("a second Holder bound the same queue")
	} else {
		t.Logf("refused: %v", err)
	}
	c, err := a.dial(s.v4, heldPort, 2*time.Second)
	if err != nil {
		t.Fatalf("the first Holder after a refused second: %v", err)
	}
	c.Close()
}
