package dptest

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Userspace returns the harness of the userspace dataplane: packets are
// simulated (the first packet of a connection from the source's
// interface, then its reply from the destination's), no root needed.
func Userspace() Harness { return usHarness{} }

type usHarness struct{}

func (usHarness) Name() string { return "userspace" }

func (usHarness) NewHost(t *testing.T) Host {
	dp := dataplane.NewUserspace()
	t.Cleanup(func() { _ = dp.Close() })
	return &usHost{dp: dp, eps: map[string]*usEndpoint{}, byAddr: map[netip.Addr]*usEndpoint{}, port: 32768}
}

type usHost struct {
	dp     *dataplane.Userspace
	mu     sync.Mutex
	eps    map[string]*usEndpoint
	byAddr map[netip.Addr]*usEndpoint
	port   int // next source port or echo id
}

type usEndpoint struct {
	Endpoint
	iface string // "" for an outside host
}

func (h *usHost) Dataplane() dataplane.Dataplane { return h.dp }

func (h *usHost) Logs() []dataplane.LogEntry { return h.dp.Logs() }

func (h *usHost) Supports(policy.Protocol) error { return nil }

func (h *usHost) Attach(_ context.Context, e Endpoint) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	iface := fmt.Sprintf("us%d", len(h.eps))
	return iface, h.add(&usEndpoint{Endpoint: e, iface: iface})
}

func (h *usHost) AddOutside(_ context.Context, e Endpoint) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.add(&usEndpoint{Endpoint: e})
}

func (h *usHost) add(ep *usEndpoint) error {
	if _, dup := h.eps[ep.Name]; dup {
		return fmt.Errorf("dptest: endpoint %s exists", ep.Name)
	}
	for _, a := range ep.Addrs {
		if _, dup := h.byAddr[a]; dup {
			return fmt.Errorf("dptest: address %v is taken", a)
		}
		h.byAddr[a] = ep
	}
	h.eps[ep.Name] = ep
	return nil
}

// packets builds the first packet of a connection and its reply.
func (h *usHost) packets(tr Try) (first, reply policy.Packet, src, dst *usEndpoint, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	src, dst = h.eps[tr.From], h.byAddr[tr.To]
	if src == nil || dst == nil {
		return first, reply, nil, nil, fmt.Errorf("dptest: try %s -> %v: no such endpoint", tr.From, tr.To)
	}
	from := tr.Spoof
	if !from.IsValid() {
		if from, err = sameFamily(src.Addrs, tr.To); err != nil {
			return first, reply, nil, nil, err
		}
	}
	h.port++
	first = policy.Packet{Src: from, Dst: tr.To, Protocol: tr.Protocol, SrcPort: h.port, DstPort: tr.Port}
	reply = policy.Packet{Src: tr.To, Dst: from, Protocol: tr.Protocol, SrcPort: tr.Port, DstPort: h.port}
	switch tr.Protocol {
	case policy.ICMP:
		first.DstPort, reply.SrcPort, reply.DstPort = 8<<8, h.port, 0
	case policy.ICMPv6:
		first.DstPort, reply.SrcPort, reply.DstPort = 128<<8, h.port, 129<<8
	}
	return first, reply, src, dst, nil
}

func sameFamily(addrs []netip.Addr, to netip.Addr) (netip.Addr, error) {
	for _, a := range addrs {
		if a.Is4() == to.Is4() {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("dptest: no source address of the family of %v among %v", to, addrs)
}

func (h *usHost) Try(_ context.Context, tr Try) (Outcome, string, error) {
	first, reply, src, dst, err := h.packets(tr)
	if err != nil {
		return 0, "", err
	}
	if tr.Spoof.IsValid() { // one way is all a spoofer gets
		if a, why := h.dp.Packet(src.iface, first); a != policy.Allow {
			return Dropped, why, nil
		}
		return Connected, "delivered", nil
	}
	o, detail := h.roundTrip(first, reply, src, dst)
	return o, detail, nil
}

func (h *usHost) roundTrip(first, reply policy.Packet, src, dst *usEndpoint) (Outcome, string) {
	a, why := h.dp.Packet(src.iface, first)
	if a != policy.Allow {
		return OutcomeOf(a), why
	}
	if a, _ := h.dp.Packet(dst.iface, reply); a != policy.Allow {
		return Dropped, "reply dropped"
	}
	return Connected, why
}

func (h *usHost) Open(_ context.Context, tr Try) (Conn, error) {
	first, reply, src, dst, err := h.packets(tr)
	if err != nil {
		return nil, err
	}
	if o, why := h.roundTrip(first, reply, src, dst); o != Connected {
		return nil, fmt.Errorf("dptest: open %s -> %v %v/%d: %s (%s)", tr.From, tr.To, tr.Protocol, tr.Port, o, why)
	}
	return &usConn{h: h, first: first, reply: reply, src: src, dst: dst}, nil
}

type usConn struct {
	h            *usHost
	first, reply policy.Packet
	src, dst     *usEndpoint
}

func (c *usConn) Exchange(context.Context) (Outcome, error) {
	o, _ := c.h.roundTrip(c.first, c.reply, c.src, c.dst)
	return o, nil
}

func (c *usConn) Close() error {
	c.h.dp.Forget(c.first)
	return nil
}
