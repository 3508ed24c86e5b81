package compile

import (
	"sort"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// view is what a side's walk knows about the peer: which rule peers it
// matches and the named ports it resolves.
type view struct {
	has   func(p int32) bool
	ports map[portName]int // the destination's named ports: nil when it has none
}

// computeEntry writes the entries of class cl for group g: for each
// protocol bucket, the port ranges where the verdict with cl's
// memberships differs from the verdict with its own level's memberships
// removed — which is what the next, coarser lookups answer. An entry is
// thus a pure function of its key, and a port it omits falls through.
func (c *Compiler) computeEntry(g *groupInfo, cl *classInfo) {
	fine := view{has: func(p int32) bool { return containsSorted(cl.members, p) }}
	coarse := view{has: func(p int32) bool {
		return c.pr.peers[p].level > cl.level && containsSorted(cl.members, p)
	}}
	if g.dir == policy.Ingress {
		fine.ports, coarse.ports = g.ports, g.ports
	} else if cl.level == 0 {
		fine.ports = cl.ports
	}
	fm, cm := c.matched(g, fine, c.scratch[0][:0]), c.matched(g, coarse, c.scratch[1][:0])
	c.scratch[0], c.scratch[1] = fm, cm
	_, had := cl.groups[g]
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
		g.classes[cl], cl.groups[g] = struct{}{}, struct{}{}
	} else if had {
		delete(g.classes, cl)
		delete(cl.groups, g)
	}
}

// bucketDiffers reports whether the two views can decide differently in
// a bucket: only when a rule matched by one view and not the other covers
// the bucket's protocol, or when an egress named port resolves only in
// the fine view. It spares the walks for most (class, group, bucket).
func (c *Compiler) bucketDiffers(g *groupInfo, fm, cm []bool, proto int, finePorts map[portName]int) bool {
	f := 0
	named := g.dir == policy.Egress && len(finePorts) > 0
	for _, cp := range g.pols {
		for _, r := range cp.rules[g.dir] {
			if fm[f] != cm[f] || (named && fm[f]) {
				if len(r.svcs) == 0 {
					return true
				}
				for _, s := range r.svcs {
					if s.proto == proto && (fm[f] != cm[f] || s.name != "") {
						return true
					}
				}
			}
			f++
		}
	}
	return false
}

func (c *Compiler) dropEntry(g *groupInfo, cl *classInfo) {
	for b := range c.pr.bucketProt {
		c.tables[g.dir].del(TableKey{Level: uint8(cl.level), Bucket: uint8(b), Class: cl.id, Group: g.id})
	}
	delete(g.classes, cl)
	delete(cl.groups, g)
}

// computeWildcard writes g's verdict for a peer that matches none of its
// specific peers and resolves none of its egress named ports: complete
// port maps, the last lookup of a side.
func (c *Compiler) computeWildcard(g *groupInfo) {
	v := view{has: func(int32) bool { return false }}
	if g.dir == policy.Ingress {
		v.ports = g.ports
	}
	m := c.matched(g, v, nil)
	for b := range c.pr.bucketProt {
		c.tables[g.dir].set(TableKey{Level: wildcardLevel, Bucket: uint8(b), Group: g.id}, c.outcomeMap(g, v, m, b))
	}
}

func containsSorted(s []int32, x int32) bool {
	i := sort.Search(len(s), func(i int) bool { return s[i] >= x })
	return i < len(s) && s[i] == x
}

// matched lists, in g's rule order, whether each rule's peers match v.
func (c *Compiler) matched(g *groupInfo, v view, out []bool) []bool {
	for _, cp := range g.pols {
		for _, r := range cp.rules[g.dir] {
			ok := r.any
			for _, p := range r.peers {
				if ok {
					break
				}
				ok = v.has(p)
			}
			out = append(out, ok)
		}
	}
	return out
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
func (c *Compiler) outcomeMap(g *groupInfo, v view, matched []bool, b int) PortMap {
	proto := c.pr.bucketProt[b]
	cuts := append(c.cuts[:0], 0)
	defer func() { c.cuts = cuts }()
	f := 0
	for _, cp := range g.pols {
		for _, r := range cp.rules[g.dir] {
			if matched[f] {
				for _, s := range r.svcs {
					for _, iv := range s.intervals(proto, v.ports) {
						cuts = append(cuts, iv[0], iv[1]+1)
					}
				}
			}
			f++
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
func (c *Compiler) decide(g *groupInfo, v view, matched []bool, proto, port int) Outcome {
	o := c.walk(g, v, matched, proto, port, false)
	if !denies(o.Action) {
		if s := c.walk(g, v, matched, proto, port, true); denies(s.Action) {
			o.WouldDeny = s.Rule
		}
	}
	return o
}

func denies(a policy.Action) bool { return a == policy.Deny || a == policy.Reject }

// walk mirrors the reference evaluator's tier walk over g's policies.
func (c *Compiler) walk(g *groupInfo, v view, matched []bool, proto, port int, staged bool) Outcome {
	f := 0
	for i := 0; i < len(g.pols); {
		tier := g.pols[i].p.Tier
		var iso RuleNum
		passed := false
		for ; i < len(g.pols) && g.pols[i].p.Tier == tier; i++ {
			cp := g.pols[i]
			rules := cp.rules[g.dir]
			observe := cp.observe && !staged
			if cp.p.Isolate[g.dir] && iso == 0 && !observe {
				iso = cp.isoNum[g.dir]
			}
			if passed {
				f += len(rules)
				continue
			}
			for j, r := range rules {
				if !matched[f+j] || !ruleCovers(&r, proto, port, v.ports) {
					continue
				}
				if observe {
					break
				}
				if r.action == policy.Pass {
					passed = true
					break
				}
				return Outcome{Action: r.action, Rule: r.num}
			}
			f += len(rules)
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
