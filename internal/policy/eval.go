package policy

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// MetadataNameLabel is the label every namespace carries with its own name,
// as Kubernetes sets it.
const MetadataNameLabel = "kubernetes.io/metadata.name"

// Engine answers policy questions about one Set: it is the reference
// evaluator, with the semantics the compiled dataplane must reproduce. Build
// it with NewEngine; it is safe for concurrent use and never changes the Set.
type Engine struct {
	set        *Set
	namespaces map[string]*Namespace
	segments   map[string]*Segment
	workloads  map[string]*Workload
	byAddr     map[netip.Addr]*Workload
	// tiers[t] lists the cluster-wide policies of tier t in evaluation
	// order; inNamespace[ns][t] the same merged with ns's own policies.
	tiers       [numTiers][]*Policy
	inNamespace map[string]*[numTiers][]*Policy
	// hasObserve: some policy is in observe mode, so a side is also judged
	// staged (as if it were enforced).
	hasObserve bool
}

// NewEngine indexes s. It fails when s names a segment that does not exist,
// or has two objects with one name; Validate reports the rest.
func NewEngine(s *Set) (*Engine, error) {
	e := &Engine{
		set:         s,
		namespaces:  map[string]*Namespace{},
		segments:    map[string]*Segment{},
		workloads:   map[string]*Workload{},
		byAddr:      map[netip.Addr]*Workload{},
		inNamespace: map[string]*[numTiers][]*Policy{},
	}
	if err := Validate(s); err != nil {
		return nil, err
	}
	for _, ns := range s.Namespaces {
		e.namespaces[ns.Name] = withNameLabel(ns)
	}
	for _, seg := range s.Segments {
		e.segments[seg.Name] = seg
	}
	for _, w := range s.Workloads {
		e.workloads[w.Key()] = w
		if _, ok := e.namespaces[w.Namespace]; !ok {
			e.namespaces[w.Namespace] = withNameLabel(&Namespace{Name: w.Namespace})
		}
		for _, a := range w.IPs {
			e.byAddr[a.Unmap()] = w
		}
	}
	byNS := map[string][]*Policy{}
	for _, p := range s.Policies {
		e.hasObserve = e.hasObserve || p.Mode == Observe
		if p.Namespace == "" {
			e.tiers[p.Tier] = append(e.tiers[p.Tier], p)
		} else {
			byNS[p.Namespace] = append(byNS[p.Namespace], p)
		}
	}
	for t := range e.tiers {
		sortPolicies(e.tiers[t])
	}
	for ns, list := range byNS {
		var tiers [numTiers][]*Policy
		for t := range tiers {
			tiers[t] = append([]*Policy(nil), e.tiers[t]...)
		}
		for _, p := range list {
			tiers[p.Tier] = append(tiers[p.Tier], p)
		}
		for t := range tiers {
			sortPolicies(tiers[t])
		}
		e.inNamespace[ns] = &tiers
	}
	return e, nil
}

func withNameLabel(ns *Namespace) *Namespace {
	labels := make(map[string]string, len(ns.Labels)+1)
	for k, v := range ns.Labels {
		labels[k] = v
	}
	labels[MetadataNameLabel] = ns.Name
	c := *ns
	c.Labels = labels
	return &c
}

// sortPolicies orders a tier: by priority, then by key, so that the order
// never depends on the order of the input.
func sortPolicies(ps []*Policy) {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Priority != ps[j].Priority {
			return ps[i].Priority < ps[j].Priority
		}
		return ps[i].Key() < ps[j].Key()
	})
}

// Set returns the set the engine was built from.
func (e *Engine) Set() *Set { return e.set }

// Namespace returns the namespace of that name, with its labels (including
// MetadataNameLabel); a namespace only named by a workload has no other label.
func (e *Engine) Namespace(name string) *Namespace {
	if ns, ok := e.namespaces[name]; ok {
		return ns
	}
	return withNameLabel(&Namespace{Name: name})
}

// Endpoint resolves "namespace/name" to a workload, or an IP address to the
// workload that owns it or to an outside address.
func (e *Engine) Endpoint(ref string) (Endpoint, error) {
	if a, err := netip.ParseAddr(ref); err == nil {
		a = a.Unmap()
		return Endpoint{Addr: a, Workload: e.byAddr[a]}, nil
	}
	if strings.Count(ref, "/") != 1 {
		return Endpoint{}, fmt.Errorf("endpoint %q: want namespace/name or an IP address", ref)
	}
	w, ok := e.workloads[ref]
	if !ok {
		return Endpoint{}, fmt.Errorf("endpoint %q: no such workload in the inventory", ref)
	}
	if len(w.IPs) == 0 {
		return Endpoint{}, fmt.Errorf("endpoint %q: the workload has no address", ref)
	}
	return Endpoint{Addr: w.IPs[0].Unmap(), Workload: w}, nil
}

// InSegment reports whether ep is a member of the named segment.
func (e *Engine) InSegment(name string, ep Endpoint) bool {
	seg := e.segments[name]
	if seg == nil {
		return false
	}
	for _, c := range seg.CIDRs {
		if c.Contains(ep.Addr) {
			return true
		}
	}
	w := ep.Workload
	return w != nil && seg.Workloads != nil &&
		seg.Namespaces.Matches(e.Namespace(w.Namespace)) && seg.Workloads.Matches(w.Labels)
}

// AppliesTo reports whether policy p applies to workload w.
func (e *Engine) AppliesTo(p *Policy, w *Workload) bool {
	if p.Namespace != "" && p.Namespace != w.Namespace {
		return false
	}
	s := p.Subject
	if s.Segment != "" {
		return e.InSegment(s.Segment, Endpoint{Addr: firstAddr(w), Workload: w})
	}
	return s.Namespaces.Matches(e.Namespace(w.Namespace)) && (s.Workloads == nil || s.Workloads.Matches(w.Labels))
}

func firstAddr(w *Workload) netip.Addr {
	if len(w.IPs) > 0 {
		return w.IPs[0]
	}
	return netip.Addr{}
}

// PeerMatches reports whether peer (written in policy p) names ep.
func (e *Engine) PeerMatches(peer *Peer, ep Endpoint) bool {
	switch {
	case peer.Any:
		return true
	case peer.Segment != "":
		return e.InSegment(peer.Segment, ep)
	case len(peer.CIDRs) > 0:
		for _, c := range peer.CIDRs {
			if c.Contains(ep.Addr) {
				return true
			}
		}
		return false
	}
	w := ep.Workload
	return w != nil && peer.Namespaces.Matches(e.Namespace(w.Namespace)) &&
		(peer.Workloads == nil || peer.Workloads.Matches(w.Labels))
}

// ServiceMatches reports whether s covers a connection of proto to port on
// dst (the destination workload, nil outside the inventory).
func ServiceMatches(s *Service, proto Protocol, port int, dst *Workload) bool {
	if s.Protocol != proto {
		return false
	}
	if proto == ICMP || proto == ICMPv6 {
		return (s.Type == nil || port>>8 == *s.Type) && (s.Code == nil || port&0xff == *s.Code)
	}
	switch {
	case s.Name != "":
		if dst == nil {
			return false
		}
		p, ok := dst.Port(s.Name, proto)
		return ok && p == port
	case s.Port == 0:
		return true
	case s.EndPort > s.Port:
		return s.Port <= port && port <= s.EndPort
	}
	return port == s.Port
}

func (e *Engine) ruleMatches(r *Rule, peer Endpoint, proto Protocol, port int, dst *Workload) bool {
	if len(r.Peers) > 0 {
		ok := false
		for i := range r.Peers {
			if e.PeerMatches(&r.Peers[i], peer) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(r.Services) == 0 {
		return true
	}
	for i := range r.Services {
		if ServiceMatches(&r.Services[i], proto, port, dst) {
			return true
		}
	}
	return false
}

func (e *Engine) policies(t Tier, w *Workload) []*Policy {
	if ns := e.inNamespace[w.Namespace]; ns != nil {
		return ns[t]
	}
	return e.tiers[t]
}

// Evaluate judges a new connection: the wall check, then the source's egress
// side and the destination's ingress side.
func (e *Engine) Evaluate(p Probe) Verdict {
	var v Verdict
	v.Egress = e.Side(Egress, p.From.Workload, p.To, p.Protocol, p.Port)
	v.Ingress = e.Side(Ingress, p.To.Workload, p.From, p.Protocol, p.Port)
	v.Action = Combine(v.Egress.Action, v.Ingress.Action)
	if w := e.WallBetween(p.From, p.To); w != nil {
		v.Wall, v.Action = w, Deny
		return v
	}
	if v.Action == Allow {
		if c := e.conflictClass(p.From, p.To); c != nil {
			v.ConflictClass, v.Action = c, Escalate
		}
	}
	return v
}

// Combine is the verdict of a connection from the actions of its two sides:
// deny (for deny or reject) beats escalate beats allow.
func Combine(egress, ingress Action) Action {
	switch {
	case egress == Deny || egress == Reject || ingress == Deny || ingress == Reject:
		return Deny
	case egress == Escalate || ingress == Escalate:
		return Escalate
	}
	return Allow
}

// WallBetween returns the first wall that forbids a connection from a to b.
func (e *Engine) WallBetween(a, b Endpoint) *Wall {
	for _, w := range e.set.Walls {
		for i, sa := range w.Segments {
			if !e.InSegment(sa, a) {
				continue
			}
			for j, sb := range w.Segments {
				if i != j && sa != sb && e.InSegment(sb, b) {
					return w
				}
			}
		}
	}
	return nil
}

func (e *Engine) conflictClass(from, to Endpoint) *ConflictClass {
	if from.Workload == nil {
		return nil
	}
	for _, c := range e.set.ConflictClasses {
		if c.Subjects != "" && !e.InSegment(c.Subjects, from) {
			continue
		}
		for _, d := range c.Datasets {
			if e.InSegment(d.Segment, to) {
				return c
			}
		}
	}
	return nil
}

// Side judges one side of a connection: direction d at workload w (nil: an
// outside address, which has no side and allows), against the peer at the
// other end.
func (e *Engine) Side(d Direction, w *Workload, peer Endpoint, proto Protocol, port int) Side {
	if w == nil {
		return Side{Action: Allow, Reason: "outside the inventory: no side of its own"}
	}
	enforced := e.side(d, w, peer, proto, port, false)
	if !e.hasObserve {
		return enforced
	}
	staged := e.side(d, w, peer, proto, port, true)
	if denies(staged.Action) && !denies(enforced.Action) {
		enforced.WouldDeny = staged.Rule
	}
	return enforced
}

func denies(a Action) bool { return a == Deny || a == Reject }

// side walks the tiers. With staged, observe-mode policies count as if they
// were enforced; without, they are skipped (and listed in Passed when they
// match).
func (e *Engine) side(d Direction, w *Workload, peer Endpoint, proto Protocol, port int, staged bool) Side {
	var out Side
	dst := w
	if d == Egress {
		dst = peer.Workload
	}
	for t := Tier(0); t < numTiers; t++ {
		var isolatedBy *Policy
		passed := false
	policies:
		for _, p := range e.policies(t, w) {
			if !e.AppliesTo(p, w) {
				continue
			}
			observe := p.Mode == Observe && !staged
			if p.Isolate[d] && isolatedBy == nil && !observe {
				isolatedBy = p
			}
			rules := p.Rules(d)
			for i := range rules {
				r := &rules[i]
				if !e.ruleMatches(r, peer, proto, port, dst) {
					continue
				}
				ref := RuleRef{Policy: p.Key(), Tier: t, Direction: d, Index: i, ID: r.ID, Action: r.Action, Log: r.Log, Pos: r.Pos}
				if observe {
					out.Passed = append(out.Passed, ref)
					break // the rest of this policy is shadowed by its own first match
				}
				if r.Action == Pass {
					out.Passed = append(out.Passed, ref)
					passed = true
					break policies
				}
				out.Action, out.Rule = r.Action, &ref
				return out
			}
		}
		if !passed && isolatedBy != nil {
			ref := IsolationRef(isolatedBy, d)
			out.Action, out.Rule = Deny, &ref
			out.Reason = fmt.Sprintf("%s isolates the workload for %s and no rule of tier %s allows the connection", isolatedBy.Key(), d, t)
			return out
		}
	}
	out.Action = Allow
	out.Reason = "no rule decided; without a policy that denies, traffic is allowed"
	return out
}

// IsolationRef names the implicit deny at the end of a tier for a workload
// that p isolates in direction d.
func IsolationRef(p *Policy, d Direction) RuleRef {
	return RuleRef{Policy: p.Key(), Tier: p.Tier, Direction: d, Index: -1,
		ID: p.Key() + "/" + d.String() + "/isolation", Action: Deny, Pos: p.Pos}
}
