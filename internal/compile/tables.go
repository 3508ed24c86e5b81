package compile

import (
	"slices"
	"sort"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// view is what a side's walk knows about the peer beyond the rules it
// matches: the named ports it resolves.
type view struct {
	ports map[portName]int // the destination's named ports: nil when it has none
}

// computeEntry writes the entries of class cl for group g: for each
// protocol bucket, the port ranges where the verdict with cl's
// memberships differs from the verdict with its own level's memberships
// removed — which is what the next, coarser lookups answer. An entry is
// thus a pure function of its key, and a port it omits falls through.
//
// Both views are lists of the rules they match, found from the group's
// rule index: the cost follows the rules that name cl's peers (and the
// rules that match every peer), not all of g's rules.
func (c *Compiler) computeEntry(g *groupInfo, cl *classInfo) {
	var fine, coarse view
	if g.dir == policy.Ingress {
		fine.ports, coarse.ports = g.ports, g.ports
	} else if cl.level == 0 {
		fine.ports = cl.ports
	}
	fm := c.matchedRules(g, cl.members, cl.level, c.scratch[0][:0])
	cm := c.matchedRules(g, cl.members, cl.level+1, c.scratch[1][:0])
	c.scratch[0], c.scratch[1] = fm, cm
	had := cl.groups.has(g)
	any := false
	for b, proto := range c.pr.bucketProt {
		k := TableKey{Level: uint8(cl.level), Bucket: uint8(b), Class: cl.id, Group: g.id}
		var diff PortMap
		if c.bucketDiffers(g, fm, cm, proto, fine.ports) {
			diff = differ(c.outcomeMap(g, fine, fm, b), c.outcomeMap(g, coarse, cm, b))
		}
		if len(diff) == 0 {
			if had {
				c.tables[g.dir].del(k)
			}
			continue
		}
		c.tables[g.dir].set(k, diff)
		any = true
	}
	if any {
		g.classes[cl] = struct{}{}
		cl.groups.add(g)
	} else if had {
		delete(g.classes, cl)
		cl.groups.remove(g)
	}
}

// matchedRules lists, in g's walk order, the rules that match a peer
// seen as a member of those peers in members whose level is minLevel or
// more: the rules naming one of them, and the rules that match every peer.
func (c *Compiler) matchedRules(g *groupInfo, members []int32, minLevel int, out []int32) []int32 {
	rx := &g.rx
	out = append(out, rx.any...)
	for _, p := range members {
		if c.pr.peers[p].level < minLevel {
			continue
		}
		i := sort.Search(len(rx.byPeer), func(i int) bool { return rx.byPeer[i].peer >= p })
		for ; i < len(rx.byPeer) && rx.byPeer[i].peer == p; i++ {
			out = append(out, rx.byPeer[i].pos)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// bucketDiffers reports whether the two views can decide differently in
// a bucket: only when a rule matched by one view and not the other covers
// the bucket's protocol, or when an egress named port resolves only in
// the fine view. It spares the walks for most (class, group, bucket).
// The coarse view matches a subset of the fine view's rules.
func (c *Compiler) bucketDiffers(g *groupInfo, fm, cm []int32, proto int, finePorts map[portName]int) bool {
	named := g.dir == policy.Egress && len(finePorts) > 0
	j := 0
	for _, pos := range fm {
		for j < len(cm) && cm[j] < pos {
			j++
		}
		differs := j >= len(cm) || cm[j] != pos
		if !differs && !named {
			continue
		}
		r := g.rule(pos)
		if len(r.svcs) == 0 {
			return true
		}
		for _, s := range r.svcs {
			if s.proto == proto && (differs || s.name != "") {
				return true
			}
		}
	}
	return false
}

func (c *Compiler) dropEntry(g *groupInfo, cl *classInfo) {
	for b := range c.pr.bucketProt {
		c.tables[g.dir].del(TableKey{Level: uint8(cl.level), Bucket: uint8(b), Class: cl.id, Group: g.id})
	}
	delete(g.classes, cl)
	cl.groups.remove(g)
}

// computeWildcard writes g's verdict for a peer that matches none of its
// specific peers and resolves none of its egress named ports: complete
// port maps, the last lookup of a side.
func (c *Compiler) computeWildcard(g *groupInfo) {
	var v view
	if g.dir == policy.Ingress {
		v.ports = g.ports
	}
	m := g.rx.any
	for b := range c.pr.bucketProt {
		c.tables[g.dir].set(TableKey{Level: wildcardLevel, Bucket: uint8(b), Group: g.id}, c.outcomeMap(g, v, m, b))
	}
}

// differ keeps the ranges of a where it differs from b (both complete).
func differ(a, b PortMap) PortMap {
	var out PortMap
	i, j := 0, 0
	lo := 0
	for i < len(a) && j < len(b) {
		hi := min(int(a[i].Hi), int(b[j].Hi))
		if a[i].Outcome != b[j].Outcome {
			out = appendRange(out, lo, hi, a[i].Outcome)
		}
		lo = hi + 1
		if int(a[i].Hi) == hi {
			i++
		}
		if int(b[j].Hi) == hi {
			j++
		}
	}
	return out
}

func appendRange(m PortMap, lo, hi int, o OutcomeID) PortMap {
	if n := len(m); n > 0 && m[n-1].Outcome == o && int(m[n-1].Hi)+1 == lo {
		m[n-1].Hi = uint16(hi)
		return m
	}
	return append(m, PortRange{Lo: uint16(lo), Hi: uint16(hi), Outcome: o})
}

// outcomeMap is the complete port map of bucket b for a peer seen as v:
// the walk is evaluated once per elementary interval of the ports that
// the matching rules name.
func (c *Compiler) outcomeMap(g *groupInfo, v view, matched []int32, b int) PortMap {
	proto := c.pr.bucketProt[b]
	cuts := append(c.cuts[:0], 0)
	defer func() { c.cuts = cuts }()
	for _, pos := range matched {
		for _, s := range g.rule(pos).svcs {
			for _, iv := range s.intervals(proto, v.ports) {
				cuts = append(cuts, iv[0], iv[1]+1)
			}
		}
	}
	sort.Ints(cuts)
	var out PortMap
	for i, lo := range cuts {
		if lo > 0xffff || (i > 0 && cuts[i-1] == lo) {
			continue
		}
		hi := 0xffff
		for _, n := range cuts[i+1:] {
			if n > lo {
				hi = min(n-1, 0xffff)
				break
			}
		}
		out = appendRange(out, lo, hi, c.outcomeID(c.decide(g, v, matched, proto, lo)))
	}
	return out
}

// intervals returns the ports s covers for protocol proto.
func (s *svc) intervals(proto int, ports map[portName]int) [][2]int {
	if s.proto != proto {
		return nil
	}
	if s.name != "" {
		if p, ok := ports[portName{s.name, policy.Protocol(proto)}]; ok {
			return [][2]int{{p, p}}
		}
		return nil
	}
	return s.ivs
}

func (s *svc) covers(proto, port int, ports map[portName]int) bool {
	for _, iv := range s.intervals(proto, ports) {
		if iv[0] <= port && port <= iv[1] {
			return true
		}
	}
	return false
}

// decide is the side's verdict at one point: the enforced walk, and the
// walk with observe-mode policies enforced for "would deny".
func (c *Compiler) decide(g *groupInfo, v view, matched []int32, proto, port int) Outcome {
	o := c.walk(g, v, matched, proto, port, false)
	if !denies(o.Action) {
		if s := c.walk(g, v, matched, proto, port, true); denies(s.Action) {
			o.WouldDeny = s.Rule
		}
	}
	return o
}

func denies(a policy.Action) bool { return a == policy.Deny || a == policy.Reject }

// walk mirrors the reference evaluator's tier walk over g's policies,
// looking only at the rules matched lists (in walk order): a rule the
// peer does not match never decides, and isolation is per tier.
func (c *Compiler) walk(g *groupInfo, v view, matched []int32, proto, port int, staged bool) Outcome {
	rx := &g.rx
	k := 0
	for _, ts := range rx.tiers {
		passed := false
		skip := int32(-1) // an observed policy's first covering rule ends it
		for ; k < len(matched) && rx.loc[matched[k]].pol < ts.end; k++ {
			loc := rx.loc[matched[k]]
			if passed || loc.pol == skip {
				continue
			}
			cp := g.pols[loc.pol]
			r := &cp.rules[g.dir][loc.rule]
			if !ruleCovers(r, proto, port, v.ports) {
				continue
			}
			if cp.observe && !staged {
				skip = loc.pol
				continue
			}
			if r.action == policy.Pass {
				passed = true
				continue
			}
			return Outcome{Action: r.action, Rule: r.num}
		}
		iso := ts.iso
		if staged {
			iso = ts.isoStaged
		}
		if !passed && iso != 0 {
			return Outcome{Action: policy.Deny, Rule: iso}
		}
	}
	return Outcome{Action: policy.Allow}
}

func ruleCovers(r *crule, proto, port int, ports map[portName]int) bool {
	if len(r.svcs) == 0 {
		return true
	}
	for i := range r.svcs {
		if r.svcs[i].covers(proto, port, ports) {
			return true
		}
	}
	return false
}
