package policy

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Breach is a counterexample to a wall: a connection between two of its
// segments that the policy set, without the wall, would let through.
type Breach struct {
	Wall     *Wall
	From, To string // the two segments
	Probe    Probe
	Verdict  Verdict // evaluated without walls
}

func (b Breach) String() string {
	side := func(s Side) string {
		if s.Rule != nil {
			return fmt.Sprintf("%s by %s (%s)", s.Action, s.Rule.ID, s.Rule.Pos)
		}
		return fmt.Sprintf("%s: %s", s.Action, s.Reason)
	}
	return fmt.Sprintf("wall %q breached: %s (segment %s) -> %s (segment %s) %s/%s is %s; egress %s; ingress %s",
		b.Wall.Name, b.Probe.From, b.From, b.Probe.To, b.To, b.Probe.Protocol, portString(b.Probe.Protocol, b.Probe.Port),
		b.Verdict.Action, side(b.Verdict.Egress), side(b.Verdict.Ingress))
}

func portString(p Protocol, port int) string {
	if p == ICMP || p == ICMPv6 {
		return fmt.Sprintf("type %d code %d", port>>8, port&0xff)
	}
	return fmt.Sprint(port)
}

// ProveWalls checks every wall against the whole policy set: for every
// workload of the inventory, every address class of the segments' CIDRs, and
// a representative member of each segment that the inventory does not yet
// populate, on every protocol and port class that a rule distinguishes, no
// connection between two segments of a wall may be allowed or escalated. It
// returns one counterexample per wall and pair of segments; none means every
// wall holds. Each side is judged once per class of endpoints it cannot tell
// apart, not once per pair (walls_search.go); a counterexample is confirmed
// by Engine.Side, and a disagreement is an error (the proof fails closed).
// Safe for concurrent use; s is not changed.
func ProveWalls(s *Set) ([]Breach, error) {
	if len(s.Walls) == 0 {
		return nil, nil
	}
	e, err := NewEngine(s)
	if err != nil {
		return nil, err
	}
	var walled []*Segment
	for _, w := range s.Walls {
		for _, name := range w.Segments {
			if seg := e.segments[name]; seg != nil {
				walled = append(walled, seg)
			}
		}
	}
	// Only representatives that are members of a walled segment take part;
	// the others cannot change a verdict (they have no address).
	reps, repNS := representatives(s, &memberFilter{segments: walled}, e.Namespace)
	for _, ns := range repNS {
		if _, ok := e.namespaces[ns.Name]; !ok {
			e.namespaces[ns.Name] = withNameLabel(ns) // e is ours alone
		}
	}
	workloads := append(append([]*Workload(nil), s.Workloads...), reps...)
	pv := newProver(e, serviceClasses(&Set{Workloads: workloads, Policies: s.Policies}))
	cidrs := allCIDRs(s)
	members := map[string]*memberSet{}
	for _, seg := range walled {
		if members[seg.Name] == nil {
			members[seg.Name] = pv.members(e.members(seg, workloads, cidrs))
		}
	}
	var out []Breach
	for _, w := range s.Walls {
		for _, a := range w.Segments {
			for _, b := range w.Segments {
				if a == b || members[a] == nil || members[b] == nil {
					continue
				}
				br, ok, err := pv.findBreach(members[a], members[b])
				if err != nil {
					return nil, err
				}
				if ok {
					br.Wall, br.From, br.To = w, a, b
					out = append(out, br)
				}
			}
		}
	}
	return out, nil
}

type service struct {
	proto Protocol
	port  int
}

// members lists one endpoint per distinct identity among the segment's
// workloads (of the inventory and representatives), and one address per
// address class of its CIDRs.
func (e *Engine) members(seg *Segment, workloads []*Workload, cidrs []CIDR) []Endpoint {
	var out []Endpoint
	seen := map[string]bool{}
	for _, w := range workloads {
		ep := Endpoint{Addr: firstAddr(w), Workload: w}
		if !e.InSegment(seg.Name, ep) {
			continue
		}
		key := fmt.Sprint(w.Namespace, labelKey(w.Labels), w.Ports, classOf(cidrs, ep.Addr))
		if !seen[key] {
			seen[key] = true
			out = append(out, ep)
		}
	}
	for _, a := range candidateAddrs(cidrs) {
		ep := Endpoint{Addr: a}
		if e.byAddr[a] != nil || !e.InSegment(seg.Name, ep) {
			continue
		}
		if key := "addr " + classOf(cidrs, a); !seen[key] {
			seen[key] = true
			out = append(out, ep)
		}
	}
	return out
}

func labelKey(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k, v := range l {
		keys = append(keys, k+"="+v)
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

func allCIDRs(s *Set) []CIDR {
	var out []CIDR
	for _, seg := range s.Segments {
		out = append(out, seg.CIDRs...)
	}
	for _, p := range s.Policies {
		for _, d := range []Direction{Ingress, Egress} {
			for _, r := range p.Rules(d) {
				for _, peer := range r.Peers {
					out = append(out, peer.CIDRs...)
				}
			}
		}
	}
	return out
}

// classOf is the set of blocks that contain a, as a string key.
func classOf(cidrs []CIDR, a netip.Addr) string {
	var b strings.Builder
	for i, c := range cidrs {
		if a.IsValid() && c.Contains(a) {
			fmt.Fprintf(&b, "%d,", i)
		}
	}
	return b.String()
}

// candidateAddrs returns, for every block and exception, its first address
// and the first address after it: between them they meet every class.
func candidateAddrs(cidrs []CIDR) []netip.Addr {
	var out []netip.Addr
	add := func(p netip.Prefix) {
		out = append(out, p.Addr())
		if next := lastAddr(p).Next(); next.IsValid() {
			out = append(out, next)
		}
	}
	for _, c := range cidrs {
		add(c.Prefix)
		for _, x := range c.Except {
			add(x)
		}
	}
	return out
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// serviceClasses returns one (protocol, port) per class of connections that
// the rules tell apart, and one protocol that no service names.
func serviceClasses(s *Set) []service {
	bounds := map[Protocol]map[int]bool{}
	mark := func(p Protocol, ports ...int) {
		if bounds[p] == nil {
			bounds[p] = map[int]bool{}
		}
		for _, x := range ports {
			bounds[p][x] = true
		}
	}
	for _, p := range Protocols {
		if p.HasPorts() {
			mark(p, 1)
		} else {
			mark(p, 0)
		}
	}
	for _, w := range s.Workloads {
		for _, np := range w.Ports {
			mark(np.Protocol, np.Port, np.Port+1)
		}
	}
	for _, p := range s.Policies {
		for _, d := range []Direction{Ingress, Egress} {
			for _, r := range p.Rules(d) {
				for _, sv := range r.Services {
					switch {
					case sv.Type != nil:
						t := *sv.Type << 8
						mark(sv.Protocol, t, t+256)
						if sv.Code != nil {
							mark(sv.Protocol, t|*sv.Code, t|*sv.Code+1)
						}
					case sv.Port != 0:
						end := max(sv.Port, sv.EndPort)
						mark(sv.Protocol, sv.Port, end+1)
					}
				}
			}
		}
	}
	var out []service
	for _, p := range Protocols {
		ports := make([]int, 0, len(bounds[p]))
		for x := range bounds[p] {
			if x <= 0xffff {
				ports = append(ports, x)
			}
		}
		sort.Ints(ports)
		for _, x := range ports {
			out = append(out, service{p, x})
		}
	}
	return append(out, service{proto: 47}) // GRE: a protocol no service names
}

// representatives returns synthetic members of every segment that chooses
// workloads by label, so that a wall is proven also for workloads that do
// not exist yet: one built from the segment's selector alone, and one for
// each selector a policy uses (as subject or peer) merged into it, so that
// the representatives meet every rule that could apply to a member. It
// returns those that keep accepts (nil: all), with the namespaces it made
// up for them; known resolves the namespaces that exist.
func representatives(s *Set, keep *memberFilter, known func(string) *Namespace) ([]*Workload, []*Namespace) {
	type scoped struct {
		ns     string
		labels map[string]string
	}
	selectors := []scoped{{labels: map[string]string{}}}
	for _, p := range s.Policies {
		if p.Subject.Workloads != nil {
			selectors = append(selectors, scoped{p.Namespace, satisfying(p.Subject.Workloads)})
		}
		for _, d := range []Direction{Ingress, Egress} {
			for _, r := range p.Rules(d) {
				for _, peer := range r.Peers {
					if peer.Workloads != nil {
						ns := ""
						if len(peer.Namespaces.Names) > 0 {
							ns = peer.Namespaces.Names[0]
						}
						selectors = append(selectors, scoped{ns, satisfying(peer.Workloads)})
					}
				}
			}
		}
	}
	ports := representativePorts(s)
	var out []*Workload
	var made []*Namespace
	seen := map[string]bool{}
	for _, seg := range s.Segments {
		if seg.Workloads == nil {
			continue
		}
		ns := known("default")
		switch {
		case len(seg.Namespaces.Names) > 0:
			ns = known(seg.Namespaces.Names[0])
		case seg.Namespaces.Selector != nil:
			ns = withNameLabel(&Namespace{Name: "representative-ns-" + seg.Name, Labels: satisfying(seg.Namespaces.Selector)})
		}
		used := false
		base := satisfying(seg.Workloads)
		for _, sc := range selectors {
			wns := ns
			if sc.ns != "" && (seg.Namespaces.All() || contains(seg.Namespaces.Names, sc.ns)) {
				wns = known(sc.ns)
			}
			if !keep.namespace(wns) {
				continue
			}
			labels := make(map[string]string, len(sc.labels)+len(base))
			for k, v := range sc.labels {
				labels[k] = v
			}
			for k, v := range base {
				labels[k] = v
			}
			if !keep.member(wns, labels) {
				continue
			}
			key := wns.Name + "|" + labelKey(labels)
			if seen[key] {
				continue
			}
			seen[key] = true
			used = used || wns == ns
			out = append(out, &Workload{Namespace: wns.Name, Labels: labels, Ports: ports,
				Name: fmt.Sprintf("representative-%d-of-%s", len(seen), seg.Name)})
		}
		if used && seg.Namespaces.Selector != nil && len(seg.Namespaces.Names) == 0 {
			made = append(made, ns)
		}
	}
	return out, made
}

// memberFilter keeps the representatives that are members of one of its
// segments; a nil filter keeps all.
type memberFilter struct {
	segments []*Segment
	inNS     map[string]bool
}

// namespace reports whether a workload of ns may be kept.
func (f *memberFilter) namespace(ns *Namespace) bool {
	if f == nil {
		return true
	}
	in, ok := f.inNS[ns.Name]
	if !ok {
		for _, seg := range f.segments {
			in = in || seg.Workloads != nil && seg.Namespaces.Matches(ns)
		}
		if f.inNS == nil {
			f.inNS = map[string]bool{}
		}
		f.inNS[ns.Name] = in
	}
	return in
}

// member reports whether a workload of ns with labels is kept.
func (f *memberFilter) member(ns *Namespace, labels map[string]string) bool {
	if f == nil {
		return true
	}
	for _, seg := range f.segments {
		if seg.Workloads != nil && seg.Namespaces.Matches(ns) && seg.Workloads.Matches(labels) {
			return true
		}
	}
	return false
}

// representativePorts declares every port name that a rule uses: with the
// number some workload of the inventory gives it, else with a number no rule
// names.
func representativePorts(s *Set) []NamedPort {
	declared := map[NamedPort]int{}
	for _, w := range s.Workloads {
		for _, np := range w.Ports {
			key := NamedPort{Name: np.Name, Protocol: np.Protocol}
			if _, ok := declared[key]; !ok {
				declared[key] = np.Port
			}
		}
	}
	var out []NamedPort
	fresh := 65535
	for _, p := range s.Policies {
		for _, d := range []Direction{Ingress, Egress} {
			for _, r := range p.Rules(d) {
				for _, sv := range r.Services {
					key := NamedPort{Name: sv.Name, Protocol: sv.Protocol}
					if sv.Name == "" || declared[key] < 0 {
						continue
					}
					port, ok := declared[key]
					if !ok {
						port, fresh = fresh, fresh-1
					}
					declared[key] = -1
					out = append(out, NamedPort{Name: sv.Name, Protocol: sv.Protocol, Port: port})
				}
			}
		}
	}
	return out
}

// satisfying returns labels that a selector matches: its matchLabels, the
// first value of each In and a value for each Exists.
func satisfying(sel *Selector) map[string]string {
	labels := map[string]string{}
	for k, v := range sel.MatchLabels {
		labels[k] = v
	}
	for _, r := range sel.MatchExpressions {
		switch r.Operator {
		case "In":
			labels[r.Key] = r.Values[0]
		case "Exists":
			labels[r.Key] = "x"
		}
	}
	return labels
}
