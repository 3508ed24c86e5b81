package policy

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// The search for a breach between two segments factors the evaluator
// instead of running it on every pair of members and every service class.
//
// A side's action depends only on (the local workload's policies that
// apply, with rules or isolation in that direction, and for ingress the
// named ports it declares) — its group — and on which of the group's rule
// peers the other end matches (and for egress that end's named ports).
// So for a source group g and a destination group h, with A_g the sources
// in g and B_h the destinations in h, some f in A_g and t in B_h have a
// service that both sides let through exactly when
//
//	(∪ over t in B_h of egress(g, t)) ∩ (∪ over f in A_g of ingress(h, f)) ≠ ∅
//
// because f and t are chosen independently. egress(g, t) is computed once per
// part of the destinations that g's peers cannot tell apart (a partition
// refined peer by peer on bitsets), over all service classes at once.

// wordSet is a set of small integers: service classes or member indices.
type wordSet []uint64

func newWordSet(n int) wordSet { return make(wordSet, (n+63)/64) }

func (s wordSet) add(i int)      { s[i/64] |= 1 << (i % 64) }
func (s wordSet) has(i int) bool { return s[i/64]&(1<<(i%64)) != 0 }

func (s wordSet) empty() bool {
	for _, w := range s {
		if w != 0 {
			return false
		}
	}
	return true
}

func (s wordSet) union(o wordSet) {
	for i := range s {
		s[i] |= o[i]
	}
}

// each calls f for every member in increasing order until f returns false.
func (s wordSet) each(f func(int) bool) {
	for i, w := range s {
		for w != 0 {
			if !f(i*64 + bits.TrailingZeros64(w)) {
				return
			}
			w &= w - 1
		}
	}
}

// split returns s ∩ o and s \ o.
func (s wordSet) split(o wordSet) (in, out wordSet) {
	in, out = make(wordSet, len(s)), make(wordSet, len(s))
	for i := range s {
		in[i], out[i] = s[i]&o[i], s[i]&^o[i]
	}
	return in, out
}

// sideGroup is what the verdict of a side depends on at the local end.
type sideGroup struct {
	d        Direction
	policies []*Policy // enforced, applying, with rules or isolation in d, in evaluation order
	peers    []int     // canonical ids of the peers its rules name
	named    bool      // a rule names a port: egress resolves it at the peer
	local    *Workload // a workload of the group (nil: an outside address)
}

// memberSet is the members of one segment with what the search needs of
// them; peer matches are computed lazily, once per distinct peer.
type memberSet struct {
	eps     []Endpoint
	group   [2][]*sideGroup // per direction, the member's group when it is the local end
	port    []int           // class of the member's named ports, as a destination
	all     []int
	byNS    map[string][]int // workloads by namespace
	byLabel map[string][]int // workloads by label "key=value"
	match   map[int]wordSet  // canonical peer id → members it matches
}

type prover struct {
	e        *Engine
	services []service
	byProto  map[Protocol][2]int // services[lo:hi] of a protocol
	polIndex map[*Policy]int
	groups   map[string]*sideGroup
	peerID   map[*Peer]int
	peerKey  map[string]int
	peers    []*Peer // by canonical id
	names    []NamedPort
	ports    map[string]int
	covers   map[*Rule]wordSet // services a rule covers, named ports aside
}

func newProver(e *Engine, services []service) *prover {
	pv := &prover{e: e, services: services, byProto: map[Protocol][2]int{}, polIndex: map[*Policy]int{},
		groups: map[string]*sideGroup{}, peerID: map[*Peer]int{}, peerKey: map[string]int{},
		ports: map[string]int{}, covers: map[*Rule]wordSet{}}
	for i, sv := range services {
		r, ok := pv.byProto[sv.proto]
		if !ok {
			r[0] = i
		}
		r[1] = i + 1
		pv.byProto[sv.proto] = r
	}
	seen := map[NamedPort]bool{}
	for i, p := range e.set.Policies {
		pv.polIndex[p] = i
		for _, d := range []Direction{Ingress, Egress} {
			for _, r := range p.Rules(d) {
				for _, sv := range r.Services {
					if np := (NamedPort{Name: sv.Name, Protocol: sv.Protocol}); sv.Name != "" && !seen[np] {
						seen[np] = true
						pv.names = append(pv.names, np)
					}
				}
			}
		}
	}
	return pv
}

func (pv *prover) members(eps []Endpoint) *memberSet {
	m := &memberSet{eps: eps, port: make([]int, len(eps)), byNS: map[string][]int{}, byLabel: map[string][]int{}, match: map[int]wordSet{}}
	for d := range m.group {
		m.group[d] = make([]*sideGroup, len(eps))
	}
	for i, ep := range eps {
		m.port[i] = pv.portClass(ep.Workload)
		for _, d := range []Direction{Ingress, Egress} {
			m.group[d][i] = pv.group(d, ep.Workload, m.port[i])
		}
		m.all = append(m.all, i)
		if w := ep.Workload; w != nil {
			m.byNS[w.Namespace] = append(m.byNS[w.Namespace], i)
			for k, v := range w.Labels {
				m.byLabel[k+"="+v] = append(m.byLabel[k+"="+v], i)
			}
		}
	}
	return m
}

// portClass numbers the resolutions of the port names rules use.
func (pv *prover) portClass(w *Workload) int {
	if w == nil {
		return -1
	}
	var b strings.Builder
	for _, np := range pv.names {
		if p, ok := w.Port(np.Name, np.Protocol); ok {
			b.WriteString(strconv.Itoa(p))
		}
		b.WriteByte(',')
	}
	id, ok := pv.ports[b.String()]
	if !ok {
		id = len(pv.ports)
		pv.ports[b.String()] = id
	}
	return id
}

// group returns the group of w (nil: an outside address) as the local end
// of direction d. Observe-mode policies are left out: they never change
// the enforced action.
func (pv *prover) group(d Direction, w *Workload, port int) *sideGroup {
	var list []*Policy
	named := false
	var key strings.Builder
	key.WriteString(d.String())
	if w != nil {
		for t := Tier(0); t < numTiers; t++ {
			for _, p := range pv.e.policies(t, w) {
				if p.Mode == Observe || (len(p.Rules(d)) == 0 && !p.Isolate[d]) || !pv.e.AppliesTo(p, w) {
					continue
				}
				list = append(list, p)
				named = named || namesPort(p.Rules(d))
				key.WriteString("," + strconv.Itoa(pv.polIndex[p]))
			}
		}
	}
	if named && d == Ingress {
		key.WriteString("|" + strconv.Itoa(port)) // the names resolve here, at the destination
	}
	if g, ok := pv.groups[key.String()]; ok {
		return g
	}
	g := &sideGroup{d: d, policies: list, named: named, local: w}
	seen := map[int]bool{}
	for _, p := range list {
		for i := range p.Rules(d) {
			r := &p.Rules(d)[i]
			for j := range r.Peers {
				if id := pv.peer(&r.Peers[j]); !seen[id] {
					seen[id] = true
					g.peers = append(g.peers, id)
				}
			}
		}
	}
	pv.groups[key.String()] = g
	return g
}

func namesPort(rules []Rule) bool {
	for i := range rules {
		if ruleNamesPort(&rules[i]) {
			return true
		}
	}
	return false
}

func ruleNamesPort(r *Rule) bool {
	for _, sv := range r.Services {
		if sv.Name != "" {
			return true
		}
	}
	return false
}

// peer numbers peers by what they match, so that equal peers written in
// many rules are matched once.
func (pv *prover) peer(p *Peer) int {
	if id, ok := pv.peerID[p]; ok {
		return id
	}
	sel := func(s *Selector) string {
		if s == nil {
			return "nil"
		}
		return fmt.Sprintf("%q %q", s.MatchLabels, s.MatchExpressions)
	}
	key := fmt.Sprintf("%t %q %q %q %s %s", p.Any, p.Segment, p.CIDRs, p.Namespaces.Names, sel(p.Namespaces.Selector), sel(p.Workloads))
	id, ok := pv.peerKey[key]
	if !ok {
		id = len(pv.peers)
		pv.peerKey[key] = id
		pv.peers = append(pv.peers, p)
	}
	pv.peerID[p] = id
	return id
}

// matches returns the members that canonical peer id names.
func (pv *prover) matches(m *memberSet, id int) wordSet {
	if s, ok := m.match[id]; ok {
		return s
	}
	s := newWordSet(len(m.eps))
	p := pv.peers[id]
	for _, i := range pv.candidates(m, p) {
		if pv.e.PeerMatches(p, m.eps[i]) {
			s.add(i)
		}
	}
	m.match[id] = s
	return s
}

// candidates narrows the members that a peer of the workload form may
// match: those of its namespaces, or those with one of its labels.
func (pv *prover) candidates(m *memberSet, p *Peer) []int {
	if p.Any || p.Segment != "" || len(p.CIDRs) > 0 {
		return m.all
	}
	var out []int
	if names := p.Namespaces.Names; len(names) > 0 && p.Namespaces.Selector == nil {
		for _, ns := range names {
			out = append(out, m.byNS[ns]...)
		}
		return out
	}
	if p.Workloads == nil || len(p.Workloads.MatchLabels) == 0 {
		return m.all
	}
	for k, v := range p.Workloads.MatchLabels {
		if out == nil || len(m.byLabel[k+"="+v]) < len(out) {
			out = m.byLabel[k+"="+v]
		}
		if len(out) == 0 {
			break
		}
	}
	return out
}

// judged is a part of the other ends that a group cannot tell apart, with
// the services that the group's side lets through for them.
type judged struct {
	members wordSet
	ok      wordSet
}

// judge partitions m (the other ends) by what g's peers tell apart and
// judges g's side once per part; parts whose side lets nothing through are
// dropped.
func (pv *prover) judge(g *sideGroup, m *memberSet) []judged {
	all := newWordSet(len(m.eps))
	for i := range m.eps {
		all.add(i)
	}
	parts := []wordSet{all}
	if g.named && g.d == Egress {
		byPort := map[int]wordSet{}
		var order []int
		for i, c := range m.port {
			if byPort[c] == nil {
				byPort[c] = newWordSet(len(m.eps))
				order = append(order, c)
			}
			byPort[c].add(i)
		}
		parts = parts[:0]
		for _, c := range order {
			parts = append(parts, byPort[c])
		}
	}
	for _, id := range g.peers {
		in := pv.matches(m, id)
		next := parts[:0:0]
		for _, p := range parts {
			a, b := p.split(in)
			if !a.empty() {
				next = append(next, a)
			}
			if !b.empty() {
				next = append(next, b)
			}
		}
		parts = next
	}
	var out []judged
	for _, p := range parts {
		rep := -1
		p.each(func(i int) bool { rep = i; return false })
		if ok := pv.side(g, m, rep); !ok.empty() {
			out = append(out, judged{members: p, ok: ok})
		}
	}
	return out
}

// side is Engine.side for every service class at once, enforced only: the
// services on which g's side, against member rep of m, allows or escalates.
func (pv *prover) side(g *sideGroup, m *memberSet, rep int) wordSet {
	n := len(pv.services)
	undecided, ok := newWordSet(n), newWordSet(n)
	for i := 0; i < n; i++ {
		undecided.add(i)
	}
	dst := g.local
	if g.d == Egress {
		dst = m.eps[rep].Workload
	}
	active, passed := newWordSet(n), newWordSet(n)
	for i := 0; i < len(g.policies); {
		tier, isolated := g.policies[i].Tier, false
		clear(passed)
		for ; i < len(g.policies) && g.policies[i].Tier == tier; i++ {
			p := g.policies[i]
			isolated = isolated || p.Isolate[g.d]
			for w := range active {
				active[w] = undecided[w] &^ passed[w]
			}
			rules := p.Rules(g.d)
			for j := range rules {
				r := &rules[j]
				if !pv.peerMatches(r, m, rep) {
					continue
				}
				cover := pv.cover(r, dst)
				for w := range active {
					hit := active[w] & cover[w]
					if hit == 0 {
						continue
					}
					active[w] &^= hit
					switch r.Action {
					case Pass:
						passed[w] |= hit
					case Allow, Escalate:
						ok[w] |= hit
						undecided[w] &^= hit
					default:
						undecided[w] &^= hit
					}
				}
			}
		}
		if isolated {
			for w := range undecided {
				undecided[w] &= passed[w]
			}
		}
	}
	ok.union(undecided) // no rule decided: allowed
	return ok
}

func (pv *prover) peerMatches(r *Rule, m *memberSet, i int) bool {
	if len(r.Peers) == 0 {
		return true
	}
	for j := range r.Peers {
		if pv.matches(m, pv.peer(&r.Peers[j])).has(i) {
			return true
		}
	}
	return false
}

// cover returns the service classes that r's services match on dst.
func (pv *prover) cover(r *Rule, dst *Workload) wordSet {
	s, ok := pv.covers[r]
	if !ok {
		s = newWordSet(len(pv.services))
		for i, sv := range pv.services {
			if len(r.Services) == 0 {
				s.add(i)
				continue
			}
			for k := range r.Services {
				if r.Services[k].Name == "" && ServiceMatches(&r.Services[k], sv.proto, sv.port, nil) {
					s.add(i)
					break
				}
			}
		}
		pv.covers[r] = s
	}
	if dst == nil || !ruleNamesPort(r) {
		return s
	}
	s = append(wordSet(nil), s...)
	for k := range r.Services {
		sv := &r.Services[k]
		if sv.Name == "" {
			continue
		}
		span := pv.byProto[sv.Protocol]
		for i := span[0]; i < span[1]; i++ {
			if ServiceMatches(sv, sv.Protocol, pv.services[i].port, dst) {
				s.add(i)
			}
		}
	}
	return s
}

// findBreach returns a connection from a member of a to a member of b that
// both sides let through, if there is one.
func (pv *prover) findBreach(a, b *memberSet) (Breach, bool, error) {
	if len(a.eps) == 0 || len(b.eps) == 0 {
		return Breach{}, false, nil
	}
	gs, gOf := index(a.group[Egress])
	hs, hOf := index(b.group[Ingress])
	words := len(newWordSet(len(pv.services)))
	// ingress[h][g*words:]: what destination group h lets in from the
	// sources of group g (nil: nothing from anyone).
	ingress := make([]wordSet, len(hs))
	judgedIn := make([][]judged, len(hs))
	for hi, h := range hs {
		judgedIn[hi] = pv.judge(h, a)
		for _, p := range judgedIn[hi] {
			if ingress[hi] == nil {
				ingress[hi] = make(wordSet, len(gs)*words)
			}
			p.members.each(func(f int) bool {
				ingress[hi][gOf[f]*words:][:words].union(p.ok)
				return true
			})
		}
	}
	egress := make(wordSet, len(hs)*words)
	for gi, g := range gs {
		parts := pv.judge(g, b)
		clear(egress)
		for _, p := range parts {
			p.members.each(func(t int) bool {
				if in := ingress[hOf[t]]; in != nil {
					egress[hOf[t]*words:][:words].union(p.ok)
				}
				return true
			})
		}
		for hi, h := range hs {
			if ingress[hi] == nil {
				continue
			}
			both := egress[hi*words:][:words]
			in := ingress[hi][gi*words:][:words]
			for w := range both {
				both[w] &= in[w]
			}
			if both.empty() {
				continue
			}
			if br, ok, err := pv.witness(a, b, g, h, both, judgedIn[hi], parts); ok || err != nil {
				return br, ok, err
			}
		}
	}
	return Breach{}, false, nil
}

// witness finds a source of group g and a destination of group h, two
// distinct endpoints, and a service in svcs that both sides let through.
func (pv *prover) witness(a, b *memberSet, g, h *sideGroup, svcs wordSet, in, out []judged) (br Breach, found bool, err error) {
	pick := func(m *memberSet, groups []*sideGroup, want *sideGroup, parts []judged, s int) []int {
		var got []int
		for _, p := range parts {
			if !p.ok.has(s) {
				continue
			}
			p.members.each(func(i int) bool {
				if groups[i] == want {
					got = append(got, i)
				}
				return len(got) < 2
			})
			if len(got) == 2 {
				break
			}
		}
		return got
	}
	svcs.each(func(s int) bool {
		for _, f := range pick(a, a.group[Egress], g, in, s) {
			for _, t := range pick(b, b.group[Ingress], h, out, s) {
				if a.eps[f] == b.eps[t] {
					continue // a connection to itself crosses no wall
				}
				br, err = pv.confirm(a.eps[f], b.eps[t], pv.services[s])
				found = err == nil
				return false
			}
		}
		return true
	})
	return br, found, err
}

// confirm judges the connection found with the evaluator itself: the
// factored search must agree with it, else proving fails closed.
func (pv *prover) confirm(from, to Endpoint, sv service) (Breach, error) {
	p := Probe{From: from, To: to, Protocol: sv.proto, Port: sv.port}
	eg := pv.e.Side(Egress, from.Workload, to, sv.proto, sv.port)
	in := pv.e.Side(Ingress, to.Workload, from, sv.proto, sv.port)
	a := Combine(eg.Action, in.Action)
	if a != Allow && a != Escalate {
		return Breach{}, fmt.Errorf("policy: prove walls: the search found %s -> %s %s/%s but the evaluator says %s; please report this",
			from, to, sv.proto, portString(sv.proto, sv.port), a)
	}
	return Breach{Probe: p, Verdict: Verdict{Action: a, Egress: eg, Ingress: in}}, nil
}

// index lists the distinct groups in order of first appearance, and the
// position in that list of each member's group.
func index(groups []*sideGroup) ([]*sideGroup, []int) {
	at := map[*sideGroup]int{}
	var list []*sideGroup
	of := make([]int, len(groups))
	for i, g := range groups {
		n, ok := at[g]
		if !ok {
			n = len(list)
			at[g] = n
			list = append(list, g)
		}
		of[i] = n
	}
	return list, of
}
