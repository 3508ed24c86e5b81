package policy

import (
	"net/netip"
	"sync"
)

// Packet is one packet as a stateful firewall sees it. For ICMP, SrcPort is
// the echo identifier and DstPort is type<<8 | code.
type Packet struct {
	Src, Dst         netip.Addr
	Protocol         Protocol
	SrcPort, DstPort int
}

type flowKey struct {
	src, dst         netip.Addr
	proto            Protocol
	srcPort, dstPort int
}

// Conntrack is the reference evaluator with connection-tracking semantics,
// as the kernel dataplane behaves: the first packet of a connection is judged
// by the policy; later packets of an allowed connection, in either direction,
// pass without being judged again (so a reply is never blocked by the
// replier's own egress policy). Denied connections leave no state. It is
// safe for concurrent use.
type Conntrack struct {
	engine *Engine
	mu     sync.Mutex
	flows  map[flowKey]bool
}

// NewConntrack tracks connections judged by e.
func NewConntrack(e *Engine) *Conntrack {
	return &Conntrack{engine: e, flows: map[flowKey]bool{}}
}

// Established reports whether p belongs to a connection already allowed.
func (c *Conntrack) Established(p Packet) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flows[keyOf(p)] || c.flows[replyKey(p)]
}

// Packet judges p: established traffic passes; a new connection gets the
// policy's verdict, and is remembered when allowed. It returns the action
// and, for a new connection, the verdict (nil when the packet was
// established).
func (c *Conntrack) Packet(p Packet) (Action, *Verdict) {
	if c.Established(p) {
		return Allow, nil
	}
	from := Endpoint{Addr: p.Src.Unmap(), Workload: c.engine.byAddr[p.Src.Unmap()]}
	to := Endpoint{Addr: p.Dst.Unmap(), Workload: c.engine.byAddr[p.Dst.Unmap()]}
	v := c.engine.Evaluate(Probe{From: from, To: to, Protocol: p.Protocol, Port: p.DstPort})
	if v.Action == Allow {
		c.mu.Lock()
		c.flows[keyOf(p)] = true
		c.mu.Unlock()
	}
	return v.Action, &v
}

// Forget drops a connection (as when conntrack's entry expires).
func (c *Conntrack) Forget(p Packet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.flows, keyOf(p))
	delete(c.flows, replyKey(p))
}

func keyOf(p Packet) flowKey {
	return flowKey{p.Src.Unmap(), p.Dst.Unmap(), p.Protocol, p.SrcPort, p.DstPort}
}

// replyKey is the key of the connection that p would be the reply of. An
// ICMP echo reply (type 0, or 129 for ICMPv6) answers an echo request (type
// 8, or 128) with the same identifier.
func replyKey(p Packet) flowKey {
	k := flowKey{p.Dst.Unmap(), p.Src.Unmap(), p.Protocol, p.DstPort, p.SrcPort}
	switch {
	case p.Protocol == ICMP && p.DstPort>>8 == 0:
		k.srcPort, k.dstPort = p.SrcPort, 8<<8
	case p.Protocol == ICMPv6 && p.DstPort>>8 == 129:
		k.srcPort, k.dstPort = p.SrcPort, 128<<8
	}
	return k
}
