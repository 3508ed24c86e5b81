package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Userspace is a Dataplane that judges packets in Go with the reference
// evaluator (policy.Engine) and connection-tracking semantics, as the
// kernel dataplane behaves: anti-spoofing first, then established
// traffic, then the policy for the first packet of a connection. Tests
// feed it packets through Packet. The zero value is not usable; call
// NewUserspace. All methods are safe for concurrent use.
//
// The connection table lives here rather than in a policy.Conntrack
// because a Conntrack is bound to one engine, and connections must
// outlive an Apply, as kernel conntrack entries do; the semantics (which
// packet answers which) are Conntrack's.
type Userspace struct {
	mu     sync.RWMutex // guards cur and closed; Apply swaps cur whole
	cur    *usState
	closed bool

	ctMu     sync.Mutex // guards the rest
	flows    map[flowKey]struct{}
	rules    map[string]Counter
	walls    map[string]Counter
	spoofed  Counter
	logs     []LogEntry
	logStart int // logs is a ring once full
}

// MaxLogs bounds the log entries a Userspace keeps (the newest win).
const MaxLogs = 1024

// LogEntry is what a logged rule or an observe-mode "would deny" records,
// as the kernel dataplane sends to NFLOG.
type LogEntry struct {
	RuleID    string
	Action    policy.Action // what the rule does (for WouldDeny: what it would do)
	WouldDeny bool
	Packet    policy.Packet
}

// usState is one applied Desired, immutable once built.
type usState struct {
	engine *policy.Engine // nil: no policy, every connection allowed
	ifaces map[string]usIface
	ruleID map[string]bool // the rule ids in force (counters of others are dropped)
}

type usIface struct {
	workload string
	addrs    map[netip.Addr]bool
}

type flowKey struct {
	src, dst         netip.Addr
	proto            policy.Protocol
	srcPort, dstPort int
}

// NewUserspace returns a userspace dataplane that allows everything until
// the first Apply.
func NewUserspace() *Userspace {
	return &Userspace{
		cur:   &usState{},
		flows: map[flowKey]struct{}{},
		rules: map[string]Counter{},
		walls: map[string]Counter{},
	}
}

// Apply makes d the state in force. Connections already established stay
// established, as with kernel conntrack.
func (u *Userspace) Apply(ctx context.Context, d Desired) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dataplane: userspace apply: %w", err)
	}
	next, err := buildState(d)
	if err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return ErrClosed
	}
	u.cur = next
	u.ctMu.Lock()
	for id := range u.rules {
		if !next.ruleID[id] {
			delete(u.rules, id)
		}
	}
	u.ctMu.Unlock()
	return nil
}

func buildState(d Desired) (*usState, error) {
	s := &usState{ifaces: map[string]usIface{}, ruleID: map[string]bool{}}
	for i, a := range d.Attachments {
		if a.Interface == "" {
			return nil, fmt.Errorf("dataplane: userspace apply: attachments[%d] (%s): no interface name", i, a.Workload)
		}
		if _, dup := s.ifaces[a.Interface]; dup {
			return nil, fmt.Errorf("dataplane: userspace apply: attachments[%d]: interface %s is attached twice", i, a.Interface)
		}
		ifc := usIface{workload: a.Workload, addrs: map[netip.Addr]bool{}}
		for _, addr := range a.Addrs {
			if !addr.IsValid() {
				return nil, fmt.Errorf("dataplane: userspace apply: attachments[%d] (%s): invalid address", i, a.Workload)
			}
			ifc.addrs[addr.Unmap()] = true
		}
		s.ifaces[a.Interface] = ifc
	}
	if d.State == nil {
		return s, nil
	}
	if d.Set == nil {
		return nil, fmt.Errorf("dataplane: userspace apply: Desired.Set is nil: the userspace dataplane judges with the policy set State was compiled from")
	}
	e, err := policy.NewEngine(d.Set)
	if err != nil {
		return nil, fmt.Errorf("dataplane: userspace apply: %w", err)
	}
	s.engine = e
	for _, p := range d.Set.Policies {
		for _, dir := range []policy.Direction{policy.Ingress, policy.Egress} {
			for _, r := range p.Rules(dir) {
				s.ruleID[r.ID] = true
			}
			s.ruleID[policy.IsolationRef(p, dir).ID] = true
		}
	}
	return s, nil
}

// Packet judges one packet that arrived from the host-side interface
// iface ("" or an interface that is not an attachment: from outside, where
// no anti-spoofing applies). It returns allow, deny, reject or escalate
// and a reason for people. Packet keeps working after Close: enforcement
// stays in place.
func (u *Userspace) Packet(iface string, p policy.Packet) (policy.Action, string) {
	p.Src, p.Dst = p.Src.Unmap(), p.Dst.Unmap()
	u.mu.RLock()
	s := u.cur
	u.mu.RUnlock()
	if ifc, ok := s.ifaces[iface]; ok && !ifc.addrs[p.Src] {
		u.ctMu.Lock()
		u.spoofed.Packets++
		u.ctMu.Unlock()
		return policy.Deny, fmt.Sprintf("spoofed: %v is not an address of %s, attached at %s", p.Src, ifc.workload, iface)
	}
	k := keyOf(p)
	u.ctMu.Lock()
	_, fwd := u.flows[k]
	_, rev := u.flows[replyKey(p)]
	u.ctMu.Unlock()
	if fwd || rev {
		return policy.Allow, "established"
	}
	if s.engine == nil {
		u.remember(k)
		return policy.Allow, "no policy in force"
	}
	v := s.engine.Evaluate(probeOf(s.engine, p))
	a := Enforced(v)
	u.account(p, v, a)
	if a == policy.Allow {
		u.remember(k)
	}
	return a, reason(v, a)
}

func probeOf(e *policy.Engine, p policy.Packet) policy.Probe {
	from, _ := e.Endpoint(p.Src.String())
	to, _ := e.Endpoint(p.Dst.String())
	return policy.Probe{From: from, To: to, Protocol: p.Protocol, Port: p.DstPort}
}

// Enforced is what a dataplane does with the first packet of a connection
// judged v: allow, deny (drop), reject (refuse) or escalate. A wall drops.
// When a side denies, the source's egress is consulted first: its deny or
// reject decides how; otherwise the destination's ingress decides.
func Enforced(v policy.Verdict) policy.Action {
	switch {
	case v.Action == policy.Allow || v.Action == policy.Escalate:
		return v.Action
	case v.Wall != nil:
		return policy.Deny
	case v.Egress.Action == policy.Deny || v.Egress.Action == policy.Reject:
		return v.Egress.Action
	case v.Ingress.Action == policy.Reject:
		return policy.Reject
	}
	return policy.Deny
}

// account counts the rules a kernel consults for a new connection: none
// behind a wall; the egress rule; the ingress rule unless egress denied.
func (u *Userspace) account(p policy.Packet, v policy.Verdict, a policy.Action) {
	u.ctMu.Lock()
	defer u.ctMu.Unlock()
	if v.Wall != nil {
		c := u.walls[v.Wall.Name]
		c.Packets++
		u.walls[v.Wall.Name] = c
		return
	}
	sides := []policy.Side{v.Egress}
	if v.Egress.Action != policy.Deny && v.Egress.Action != policy.Reject {
		sides = append(sides, v.Ingress)
	}
	for _, s := range sides {
		if s.Rule != nil {
			c := u.rules[s.Rule.ID]
			c.Packets++
			u.rules[s.Rule.ID] = c
			if s.Rule.Log {
				u.log(LogEntry{RuleID: s.Rule.ID, Action: s.Rule.Action, Packet: p})
			}
		}
		if s.WouldDeny != nil {
			u.log(LogEntry{RuleID: s.WouldDeny.ID, Action: s.WouldDeny.Action, WouldDeny: true, Packet: p})
		}
	}
}

func (u *Userspace) log(e LogEntry) {
	if len(u.logs) < MaxLogs {
		u.logs = append(u.logs, e)
		return
	}
	u.logs[u.logStart] = e
	u.logStart = (u.logStart + 1) % MaxLogs
}

func reason(v policy.Verdict, a policy.Action) string {
	if v.Wall != nil {
		return "wall " + v.Wall.Name
	}
	for _, s := range []policy.Side{v.Egress, v.Ingress} {
		if s.Action == a && s.Rule != nil {
			return fmt.Sprintf("%s by %s", a, s.Rule.ID)
		}
	}
	if v.ConflictClass != nil {
		return "conflict class " + v.ConflictClass.Name
	}
	return fmt.Sprintf("%s: %s", a, v.Ingress.Reason)
}

func (u *Userspace) remember(k flowKey) {
	u.ctMu.Lock()
	u.flows[k] = struct{}{}
	u.ctMu.Unlock()
}

// Forget ends the connection p belongs to (as when its conntrack entry
// expires): its next packet is judged as a new connection.
func (u *Userspace) Forget(p policy.Packet) {
	p.Src, p.Dst = p.Src.Unmap(), p.Dst.Unmap()
	u.ctMu.Lock()
	defer u.ctMu.Unlock()
	delete(u.flows, keyOf(p))
	delete(u.flows, replyKey(p))
}

// Logs returns the log entries recorded, oldest first.
func (u *Userspace) Logs() []LogEntry {
	u.ctMu.Lock()
	defer u.ctMu.Unlock()
	out := append([]LogEntry(nil), u.logs[u.logStart:]...)
	return append(out, u.logs[:u.logStart]...)
}

// Counters returns what the state in force has counted. Bytes stay zero:
// the model carries no payload.
func (u *Userspace) Counters(ctx context.Context) (Counters, error) {
	u.mu.RLock()
	closed := u.closed
	u.mu.RUnlock()
	if closed {
		return Counters{}, ErrClosed
	}
	u.ctMu.Lock()
	defer u.ctMu.Unlock()
	c := Counters{Rules: make(map[string]Counter, len(u.rules)), Walls: make(map[string]Counter, len(u.walls)), Spoofed: u.spoofed}
	for k, v := range u.rules {
		c.Rules[k] = v
	}
	for k, v := range u.walls {
		c.Walls[k] = v
	}
	return c, nil
}

// Close ends Apply and Counters; Packet goes on enforcing the last state.
func (u *Userspace) Close() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.closed = true
	return nil
}

func keyOf(p policy.Packet) flowKey {
	return flowKey{p.Src, p.Dst, p.Protocol, p.SrcPort, p.DstPort}
}

// replyKey is the key of the connection p would answer. An ICMP echo
// reply (type 0, or 129 for ICMPv6) answers the echo request (type 8, or
// 128) with the same identifier, as in policy.Conntrack.
func replyKey(p policy.Packet) flowKey {
	k := flowKey{p.Dst, p.Src, p.Protocol, p.DstPort, p.SrcPort}
	switch {
	case p.Protocol == policy.ICMP && p.DstPort>>8 == 0:
		k.srcPort, k.dstPort = p.SrcPort, 8<<8
	case p.Protocol == policy.ICMPv6 && p.DstPort>>8 == 129:
		k.srcPort, k.dstPort = p.SrcPort, 128<<8
	}
	return k
}

var _ Dataplane = (*Userspace)(nil)
