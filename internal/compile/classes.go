package compile

import (
	"slices"
	"strconv"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// classInfo is a peer class: the identities that match the same rule peers
// of one direction at levels >= level (and, for egress level 0, declare
// the same named ports). Its table entries are computed once per group
// that names one of its level's peers.
type classInfo struct {
	id      ClassID
	dir     policy.Direction
	level   int
	key     string
	members []int32 // sorted peer ids
	ports   map[portName]int
	refs    int
	groups  memberSet[*groupInfo] // groups with entries for this class
	seen    uint64                // visit mark, see Compiler.epoch
}

// groupInfo is a policy group: the local identities to which the same
// policies apply in one direction (and, for ingress, that resolve the
// named ports of those policies alike).
type groupInfo struct {
	id      GroupID
	dir     policy.Direction
	key     string
	pols    []*cpolicy
	ports   map[portName]int // ingress: the subject's own named ports
	peers   []int32
	names   []portName // egress: named ports resolved against the peer
	rx      ruleIndex
	refs    int
	classes map[*classInfo]struct{}
	seen    uint64
}

type guardInfo struct {
	id       GuardID
	key      string
	workload bool
	segs     []bool // by segment index; only the segments walls name
	refs     int
}

// attachClasses gives a new identity its classes and guard, and indexes it.
func (c *Compiler) attachClasses(id *identInfo) {
	id.segs = c.segments(id, id.cidr)
	id.subjSegs = id.segs
	if id.first != id.cidr {
		id.subjSegs = c.segments(id, id.first)
	}
	id.class = c.acquireClasses(id)
	id.guard = c.acquireGuard(id, id.segs)
	c.idx.update(id, true)
}

// acquireClasses returns the classes id belongs to, one more reference each.
func (c *Compiler) acquireClasses(id *identInfo) [2][NumLevels]*classInfo {
	pr := c.pr
	var members [2][]int32
	add := func(p int32) {
		for d := range members {
			if pr.peers[p].used(d) {
				members[d] = append(members[d], p)
			}
		}
	}
	for i, in := range id.segs {
		if in {
			for _, p := range pr.segPeers[i] {
				add(p)
			}
		}
	}
	for _, p := range pr.cidrPeersOf(id.cidr) {
		add(p)
	}
	pr.wlPeers.query(id, add)
	var out [2][NumLevels]*classInfo
	for d := range members {
		m := members[d]
		slices.Sort(m)
		for l := 0; l < NumLevels; l++ {
			var sub []int32
			own := false // a member of level l
			for _, p := range m {
				if lp := pr.peers[p].level; lp >= l {
					sub = append(sub, p)
					own = own || lp == l
				}
			}
			var ports map[portName]int
			if d == int(policy.Egress) && l == 0 {
				ports = id.ports
			}
			if !own && len(ports) == 0 {
				// Entries at level l differ from the coarser lookups only
				// by level-l members (or egress named ports): without
				// them a class has none, and all such classes are one.
				sub = nil
			}
			out[d][l] = c.acquireClass(policy.Direction(d), l, sub, ports)
		}
	}
	return out
}

func (c *Compiler) acquireClass(d policy.Direction, l int, members []int32, ports map[portName]int) *classInfo {
	var b strings.Builder
	for _, p := range members {
		b.WriteString(strconv.Itoa(int(p)))
		b.WriteByte(',')
	}
	b.WriteByte('|')
	writePorts(&b, ports)
	key := b.String()
	cl, ok := c.classes[d][l][key]
	if !ok {
		cl = &classInfo{dir: d, level: l, key: key, members: members, ports: ports}
		cl.id = ClassID(c.alloc.numberNew("c:"+d.String()+strconv.Itoa(l)+":"+key, kindClass)) // c.classes holds what is numbered
		c.classes[d][l][key] = cl
		c.indexClass(cl, true)
		c.groupsOfClass(cl, func(g *groupInfo) { c.computeEntry(g, cl) })
	}
	cl.refs++
	return cl
}

// indexClass adds cl to (or removes it from) the class indexes.
func (c *Compiler) indexClass(cl *classInfo, add bool) {
	for _, p := range cl.members {
		if c.pr.peers[p].level == cl.level {
			setMember(c.classesByPeer[cl.dir], p, cl, add)
		}
	}
	for pn := range cl.ports {
		setMember(c.classesByName, pn, cl, add)
	}
}

// groupsOfClass lists the groups whose entries depend on cl: those naming
// one of its peers of its own level, or (egress, level 0) one of its ports.
func (c *Compiler) groupsOfClass(cl *classInfo, f func(*groupInfo)) {
	c.epoch++
	visit := func(g *groupInfo) {
		if g.seen != c.epoch {
			g.seen = c.epoch
			f(g)
		}
	}
	for _, p := range cl.members {
		if c.pr.peers[p].level == cl.level {
			for g := range c.groupsByPeer[cl.dir][p].all() {
				visit(g)
			}
		}
	}
	for pn := range cl.ports {
		for g := range c.groupsByName[pn].all() {
			visit(g)
		}
	}
}

func (c *Compiler) releaseClass(cl *classInfo) {
	cl.refs--
	if cl.refs > 0 {
		return
	}
	for g := range cl.groups.all() {
		c.dropEntry(g, cl)
	}
	c.indexClass(cl, false)
	delete(c.classes[cl.dir][cl.level], cl.key)
	c.alloc.release("c:" + cl.dir.String() + strconv.Itoa(cl.level) + ":" + cl.key)
}

// attachGroups finds the policies that apply to a local identity.
func (c *Compiler) attachGroups(id *identInfo) {
	pr := c.pr
	var list []*cpolicy
	pr.subjects.query(id, func(i int32) { list = append(list, pr.polByID[i]) })
	for seg, in := range id.subjSegs {
		if !in {
			continue
		}
		for _, i := range pr.segSubject[seg] {
			if ns := pr.polByID[i].p.Namespace; ns == "" || ns == id.ns {
				list = append(list, pr.polByID[i])
			}
		}
	}
	slices.SortFunc(list, polCmp)
	for d := range id.group {
		var pols []*cpolicy
		var b strings.Builder
		for i, cp := range list {
			if (i > 0 && list[i-1] == cp) || (len(cp.rules[d]) == 0 && !cp.p.Isolate[d]) {
				continue
			}
			pols = append(pols, cp)
			b.WriteString(cp.key + "\x00")
		}
		if len(pols) == 0 {
			continue
		}
		var ports map[portName]int
		if d == int(policy.Ingress) {
			ports = groupPorts(pols, id.ports)
			writePorts(&b, ports)
		}
		id.group[d] = c.acquireGroup(policy.Direction(d), b.String(), pols, ports)
	}
}

// groupPorts keeps the subject's named ports that the group's ingress
// rules name.
func groupPorts(pols []*cpolicy, have map[portName]int) map[portName]int {
	var out map[portName]int
	for _, cp := range pols {
		for _, r := range cp.rules[policy.Ingress] {
			for _, s := range r.svcs {
				pn := portName{s.name, policy.Protocol(s.proto)}
				if p, ok := have[pn]; ok && s.name != "" {
					if out == nil {
						out = map[portName]int{}
					}
					out[pn] = p
				}
			}
		}
	}
	return out
}

func (c *Compiler) acquireGroup(d policy.Direction, key string, pols []*cpolicy, ports map[portName]int) *groupInfo {
	g, ok := c.groups[d][key]
	if !ok {
		g = c.newGroup(d, key, pols, ports)
	}
	g.refs++
	return g
}

func (c *Compiler) newGroup(d policy.Direction, key string, pols []*cpolicy, ports map[portName]int) *groupInfo {
	g := &groupInfo{dir: d, key: key, pols: pols, ports: ports, classes: map[*classInfo]struct{}{}}
	g.id = GroupID(c.alloc.number("g:"+d.String()+":"+key, kindGroup))
	c.groups[d][key] = g
	c.linkGroup(g)
	c.computeWildcard(g)
	c.classesOfGroup(g, func(cl *classInfo) { c.computeEntry(g, cl) })
	return g
}

// linkGroup lists the peers and egress named ports of g's rules, indexes
// g under them and indexes g's rules by the peers they name.
func (c *Compiler) linkGroup(g *groupInfo) {
	d := g.dir
	names := map[portName]bool{}
	g.rx = ruleIndex{}
	for pi, cp := range g.pols {
		for ri, r := range cp.rules[d] {
			pos := int32(len(g.rx.loc))
			g.rx.loc = append(g.rx.loc, ruleLoc{pol: int32(pi), rule: int32(ri)})
			if r.any {
				g.rx.any = append(g.rx.any, pos)
			}
			for _, p := range r.peers {
				g.rx.byPeer = append(g.rx.byPeer, peerRule{peer: p, pos: pos})
			}
			for _, s := range r.svcs {
				if s.name != "" && d == policy.Egress {
					names[portName{s.name, policy.Protocol(s.proto)}] = true
				}
			}
		}
	}
	slices.SortFunc(g.rx.byPeer, func(a, b peerRule) int {
		if a.peer != b.peer {
			return int(a.peer - b.peer)
		}
		return int(a.pos - b.pos)
	})
	g.rx.byPeer = slices.Compact(g.rx.byPeer)
	g.rx.tiers = tierSpans(g.pols, d)
	for i, pr := range g.rx.byPeer {
		if i == 0 || g.rx.byPeer[i-1].peer != pr.peer {
			g.peers = append(g.peers, pr.peer)
			setMember(c.groupsByPeer[d], pr.peer, g, true)
		}
	}
	for pn := range names {
		g.names = append(g.names, pn)
		setMember(c.groupsByName, pn, g, true)
	}
}

// ruleIndex holds a group's rules in walk order (positions), indexed by
// the peers they name, so that what a class matches is found without
// looking at the rules that name none of its peers.
type ruleIndex struct {
	loc    []ruleLoc  // by position
	byPeer []peerRule // sorted by peer, then position
	any    []int32    // positions of the rules that match every peer
	tiers  []tierSpan // the tiers of g.pols, in order
}

type ruleLoc struct{ pol, rule int32 } // index in g.pols, in its rules

type peerRule struct{ peer, pos int32 }

// tierSpan is one tier of a group's policies: they end before index end;
// iso is the isolation rule that applies when no rule of the tier decides
// (isoStaged: the same with observe-mode policies enforced).
type tierSpan struct {
	end            int32
	iso, isoStaged RuleNum
}

func tierSpans(pols []*cpolicy, d policy.Direction) []tierSpan {
	var out []tierSpan
	for i := 0; i < len(pols); {
		var ts tierSpan
		for tier := pols[i].p.Tier; i < len(pols) && pols[i].p.Tier == tier; i++ {
			if cp := pols[i]; cp.p.Isolate[d] {
				if ts.iso == 0 && !cp.observe {
					ts.iso = cp.isoNum[d]
				}
				if ts.isoStaged == 0 {
					ts.isoStaged = cp.isoNum[d]
				}
			}
		}
		ts.end = int32(i)
		out = append(out, ts)
	}
	return out
}

// rule is the rule at position pos of g's walk.
func (g *groupInfo) rule(pos int32) *crule {
	l := g.rx.loc[pos]
	return &g.pols[l.pol].rules[g.dir][l.rule]
}

// unlinkGroup undoes linkGroup.
func (c *Compiler) unlinkGroup(g *groupInfo) {
	for _, p := range g.peers {
		setMember(c.groupsByPeer[g.dir], p, g, false)
	}
	for _, pn := range g.names {
		setMember(c.groupsByName, pn, g, false)
	}
	g.peers, g.names, g.rx = nil, nil, ruleIndex{}
}

// classesOfGroup lists the classes whose entries for g may differ from
// its wildcard: the classes of each peer's own level, and (egress) the
// level-0 classes that declare a port g's rules name.
func (c *Compiler) classesOfGroup(g *groupInfo, f func(*classInfo)) {
	c.epoch++
	visit := func(cl *classInfo) {
		if cl.seen != c.epoch {
			cl.seen = c.epoch
			f(cl)
		}
	}
	for _, p := range g.peers {
		for cl := range c.classesByPeer[g.dir][p].all() {
			visit(cl)
		}
	}
	for _, pn := range g.names {
		for cl := range c.classesByName[pn].all() {
			visit(cl)
		}
	}
}

func (c *Compiler) releaseGroup(g *groupInfo) {
	if g == nil {
		return
	}
	g.refs--
	if g.refs > 0 {
		return
	}
	for cl := range g.classes {
		c.dropEntry(g, cl)
	}
	for b := range c.pr.bucketProt {
		c.tables[g.dir].del(TableKey{Level: wildcardLevel, Bucket: uint8(b), Group: g.id})
	}
	c.unlinkGroup(g)
	delete(c.groups[g.dir], g.key)
	c.alloc.release("g:" + g.dir.String() + ":" + g.key)
}

func (c *Compiler) acquireGuard(id *identInfo, segs []bool) *guardInfo {
	var b strings.Builder
	if id.workload {
		b.WriteString("w")
	}
	gs := make([]bool, len(segs))
	for i, in := range segs {
		if in && c.pr.guardSegs[i] {
			gs[i] = true
			b.WriteString("," + strconv.Itoa(i))
		}
	}
	key := b.String()
	g, ok := c.guards[key]
	if !ok {
		g = &guardInfo{key: key, workload: id.workload, segs: gs}
		g.id = GuardID(c.alloc.number("u:"+key, kindGuard))
		c.guards[key] = g
		for _, o := range c.guards {
			c.setGuard(g, o)
			c.setGuard(o, g)
		}
	}
	g.refs++
	return g
}

func (c *Compiler) releaseGuard(g *guardInfo) {
	g.refs--
	if g.refs > 0 {
		return
	}
	delete(c.guards, g.key)
	c.alloc.release("u:" + g.key)
	for _, o := range c.guards {
		c.guardT.del([2]GuardID{g.id, o.id})
		c.guardT.del([2]GuardID{o.id, g.id})
	}
	c.guardT.del([2]GuardID{g.id, g.id})
}

// setGuard writes the wall and conflict-class verdict from src to dst, in
// the order the reference evaluator checks them.
func (c *Compiler) setGuard(src, dst *guardInfo) {
	in := func(g *guardInfo, name string) bool {
		i, ok := c.pr.segIndex[name]
		return ok && g.segs[i]
	}
	var out Guard
walls:
	for wi, w := range c.set.Walls {
		for i, sa := range w.Segments {
			if !in(src, sa) {
				continue
			}
			for j, sb := range w.Segments {
				if i != j && sa != sb && in(dst, sb) {
					out.Wall = int32(wi + 1)
					break walls
				}
			}
		}
	}
	for ci, cc := range c.set.ConflictClasses {
		if out.Conflict != 0 || !src.workload || (cc.Subjects != "" && !in(src, cc.Subjects)) {
			continue
		}
		for _, ds := range cc.Datasets {
			if in(dst, ds.Segment) {
				out.Conflict = int32(ci + 1)
				break
			}
		}
	}
	k := [2]GuardID{src.id, dst.id}
	if out == (Guard{}) {
		c.guardT.del(k)
		return
	}
	c.guardT.set(k, out)
}
