package compile

import (
	"slices"
	"strconv"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// SetPolicies replaces the policy objects (namespaces, segments, policies,
// walls, conflict classes) of the set and brings the state up to date.
// Workloads are taken from set too. Numbers of what did not change are
// kept, so the Delta from the previous State is small when the change is.
//
// When only policies changed (added, removed or edited, in place or as
// new objects) and they name no CIDR, protocol or named port that no
// other policy names, nor stop naming the last, the cost follows the
// change: only the changed policies are compiled, and only the identities
// they select or whose rule peers they change are looked at again. Any
// other change compiles everything. Workloads are compared by pointer: a
// changed workload must be a new object (or go through UpsertWorkload).
func (c *Compiler) SetPolicies(set *policy.Set) error {
	if plan, ok := c.planPolicies(set); ok {
		c.applyPolicies(set, plan)
		return nil
	}
	prev := c.State()
	n := &Compiler{host: c.host, alloc: newAllocBuilder(prev), fullCompiles: c.fullCompiles + 1}
	n.inheritOutcomes(prev)
	n.shared = c.shared
	if err := n.reset(set); err != nil {
		return err
	}
	*c = *n
	return nil
}

// policyPlan is what SetPolicies found changed.
type policyPlan struct {
	order   []*cpolicy // the new Set.Policies; nil where new or changed
	changes []policyChange
}

// policyChange is one policy added, removed or changed.
type policyChange struct {
	old *cpolicy // nil: added
	at  int      // index of the new version in Set.Policies; -1: removed
}

// maxChanged bounds the policies changed at once that are compiled one by
// one; beyond it a full compile is about as fast.
func maxChanged(n int) int { return max(64, n/4) }

// planPolicies finds the policies that changed, or reports that the
// change cannot be made incrementally.
func (c *Compiler) planPolicies(set *policy.Set) (*policyPlan, bool) {
	pr := c.pr
	if pr == nil || pr.dups || !c.inv.same(set) || !c.sameWorkloads(set.Workloads) {
		return nil, false
	}
	c.polEpoch++
	plan := &policyPlan{order: make([]*cpolicy, len(set.Policies))}
	var addedKeys map[string]bool
	seen := 0
	for i, p := range set.Policies {
		var old *cpolicy
		if i < len(pr.order) && (pr.order[i].p == p || sameName(pr.order[i].p, p)) {
			old = pr.order[i]
		} else {
			old = pr.pols[p.Key()]
		}
		switch {
		case old != nil && old.seen == c.polEpoch:
			return nil, false // two policies with one key
		case old != nil:
			old.seen = c.polEpoch
			seen++
			if old.snap.equal(p) {
				plan.order[i] = old
				continue
			}
		default:
			if addedKeys == nil {
				addedKeys = map[string]bool{}
			}
			if addedKeys[p.Key()] {
				return nil, false
			}
			addedKeys[p.Key()] = true
		}
		plan.changes = append(plan.changes, policyChange{old: old, at: i})
	}
	if seen < len(pr.pols) {
		for _, cp := range pr.pols {
			if cp.seen != c.polEpoch {
				plan.changes = append(plan.changes, policyChange{old: cp, at: -1})
			}
		}
	}
	if len(plan.changes) > maxChanged(len(set.Policies)) || !c.footprintKept(set, plan) {
		return nil, false
	}
	return plan, true
}

// sameWorkloads reports whether ws holds the workloads the compiler has:
// the list it was last given, or else the same objects in any order.
func (c *Compiler) sameWorkloads(ws []*policy.Workload) bool {
	if !c.wlDirty && slices.Equal(ws, c.wlList) {
		return true
	}
	if len(ws) != len(c.workloads) {
		return false
	}
	c.wlEpoch++
	for _, w := range ws {
		wi := c.byPtr[w]
		if wi == nil || wi.seen == c.wlEpoch {
			return false
		}
		wi.seen = c.wlEpoch
	}
	c.wlList, c.wlDirty = slices.Clone(ws), false
	return true
}

// footprintKept reports whether the plan keeps every protocol, named port
// and CIDR named or unnamed, and names only segments that exist.
func (c *Compiler) footprintKept(set *policy.Set, plan *policyPlan) bool {
	u := &c.pr.uses
	d := uses{protos: map[int]int{}, names: map[portName]int{}, cidrs: map[string]int{}}
	for _, ch := range plan.changes {
		if ch.old != nil {
			d.add(&ch.old.fp, -1)
		}
		if ch.at < 0 {
			continue
		}
		fp := footprintOf(set.Policies[ch.at])
		for _, s := range fp.segs {
			if _, ok := c.pr.segIndex[s]; !ok {
				return false // a full compile says what is wrong
			}
		}
		d.add(&fp, 1)
	}
	return kept(u.protos, d.protos) && kept(u.names, d.names) && kept(u.cidrs, d.cidrs)
}

func kept[K comparable](have, delta map[K]int) bool {
	for k, n := range delta {
		if (have[k] > 0) != (have[k]+n > 0) {
			return false
		}
	}
	return true
}

// policyUpdate collects, while the program changes, what must be
// looked at again.
type policyUpdate struct {
	idents  []*identInfo
	groups  []*groupInfo           // holding an old policy version
	rebuild map[*groupInfo]bool    // of groups: true when its entries may change
	partial map[*groupInfo]*region // of the others: where their entries may change
	touched map[int32][2]bool      // peers whose rule counts changed: used before, by direction
}

func (c *Compiler) affect(u *policyUpdate) func(*identInfo) {
	return func(id *identInfo) {
		if id.seen != c.identEpoch {
			id.seen = c.identEpoch
			u.idents = append(u.idents, id)
		}
	}
}

func (u *policyUpdate) group(g *groupInfo, rebuild bool) {
	was, ok := u.rebuild[g]
	if !ok {
		u.groups = append(u.groups, g)
	}
	u.rebuild[g] = was || rebuild
}

// applyPolicies makes the plan's change. The order matters: peers stay
// defined until nothing refers to them; groups whose entries may change
// are taken out of the indexes so that new classes do not compute entries
// for them, and are rebuilt, if they survive, once every identity has its
// classes and groups.
func (c *Compiler) applyPolicies(set *policy.Set, plan *policyPlan) {
	pr := c.pr
	c.set = set
	pr.order = plan.order
	if len(plan.changes) == 0 {
		return
	}
	u := &policyUpdate{rebuild: map[*groupInfo]bool{}, partial: map[*groupInfo]*region{}, touched: map[int32][2]bool{}}
	c.identEpoch++
	for _, ch := range plan.changes {
		c.swapPolicy(set, plan, ch, u)
	}
	c.releaseRules(plan.changes)
	var gone []int32
	for p, before := range u.touched {
		def := pr.peers[p]
		if def.used(0) == before[0] && def.used(1) == before[1] {
			continue
		}
		c.peerIdents(def, c.affect(u))
		if !def.used(0) && !def.used(1) {
			gone = append(gone, p)
		}
	}
	c.recompute(u)
	for _, p := range gone {
		c.alloc.release("p:" + pr.peers[p].key)
		pr.dropPeer(p)
	}
	for len(pr.rules) > 1 && pr.rules[len(pr.rules)-1] == (policy.RuleRef{}) {
		pr.rules = pr.rules[:len(pr.rules)-1]
	}
}

// swapPolicy takes a policy's old version out of the program and puts
// its new one in, noting the identities whose groups may change (those
// an old or new subject selects, unless the policy applies to the same
// identities in the same place) and the groups that hold the old version.
func (c *Compiler) swapPolicy(set *policy.Set, plan *policyPlan, ch policyChange, u *policyUpdate) {
	pr := c.pr
	var cp *cpolicy
	if ch.at >= 0 {
		var err error
		if cp, err = pr.compilePolicy(snapshotFor(set.Policies[ch.at], c.shared), c.alloc); err != nil {
			panic("compile: a planned policy does not compile: " + err.Error()) // footprintKept checked
		}
		plan.order[ch.at] = cp
	}
	affect := c.affect(u)
	reshape := ch.old == nil || cp == nil || !sameShape(ch.old, cp)
	if old := ch.old; old != nil {
		var edit [2]groupEdit // what the change does to a group, by direction
		for d := range edit {
			edit[d] = c.groupEditOf(old, cp, policy.Direction(d))
		}
		c.subjectIdents(old, func(id *identInfo) {
			if reshape {
				affect(id)
			}
			for _, g := range id.group {
				if g != nil && slices.Contains(g.pols, old) {
					u.note(g, edit[g.dir])
				}
			}
		})
		pr.removePolicy(old, u.touched)
	}
	if cp != nil {
		pr.addPolicy(cp, u.touched)
		if reshape {
			c.subjectIdents(cp, affect)
		}
	}
}

// recompute gives the affected identities their classes and groups, and
// brings the groups that held an old policy version up to date.
func (c *Compiler) recompute(u *policyUpdate) {
	for _, g := range u.groups {
		if u.rebuild[g] {
			c.unlinkGroup(g)
		}
	}
	for _, id := range u.idents {
		old := id.class
		id.class = c.acquireClasses(id)
		for d := range old {
			for _, cl := range old[d] {
				c.releaseClass(cl)
			}
		}
	}
	for _, id := range u.idents {
		if id.local > 0 {
			old := id.group
			id.group = [2]*groupInfo{}
			c.attachGroups(id)
			for _, g := range old {
				c.releaseGroup(g)
			}
		}
	}
	for _, g := range u.groups {
		switch {
		case g.refs == 0:
		case u.rebuild[g]:
			c.rebuildGroup(g)
		case u.partial[g] != nil:
			c.rebuildRegion(g, u.partial[g])
		default:
			c.refreshPolicies(g)
		}
	}
	for _, id := range u.idents {
		if a := c.attrsOf(id); a != c.attrs.getOr(id.id) {
			c.attrs.set(id.id, a)
		}
	}
}

// groupEdit is what a policy's change does to a group that holds its old
// version: nothing but new pointers (neither flag), entries to compute
// again in a region, or a rebuild.
type groupEdit struct {
	rebuild bool
	region  *region
}

// groupEditOf finds what the change from old to cp (nil: removed) does to
// the groups of direction d that hold old.
func (c *Compiler) groupEditOf(old, cp *cpolicy, d policy.Direction) groupEdit {
	switch {
	case cp != nil && sameRules(old, cp, d):
		return groupEdit{}
	case cp != nil:
		if rg := c.editRegion(old, cp, d); rg != nil {
			return groupEdit{region: rg}
		}
	}
	return groupEdit{rebuild: true}
}

// note records e for g; a group that two changes concern gets the union
// of their regions, or a rebuild if either needs one.
func (u *policyUpdate) note(g *groupInfo, e groupEdit) {
	switch {
	case e.rebuild || u.rebuild[g]:
		delete(u.partial, g)
		u.group(g, true)
		return
	case e.region == nil:
	case u.partial[g] == nil:
		u.partial[g] = e.region
	case u.partial[g] != e.region:
		rg := &region{}
		rg.union(u.partial[g])
		rg.union(e.region)
		u.partial[g] = rg
	}
	u.group(g, false)
}

// sameShape reports whether two versions of a policy apply to the same
// identities at the same place of their groups, so that no identity
// changes group: same subject, tier and priority, rules or isolation in
// the same directions, and the same named ports in ingress rules (a
// group knows its subjects' values of those).
func sameShape(a, b *cpolicy) bool {
	pa, pb := a.p, b.p
	if pa.Tier != pb.Tier || pa.Priority != pb.Priority || pa.Subject.Segment != pb.Subject.Segment ||
		!nsMatchEqual(pa.Subject.Namespaces, pb.Subject.Namespaces, nil) ||
		!selectorEqual(pa.Subject.Workloads, pb.Subject.Workloads, nil) {
		return false
	}
	for d := range a.rules {
		if (len(a.rules[d]) > 0 || pa.Isolate[d]) != (len(b.rules[d]) > 0 || pb.Isolate[d]) {
			return false
		}
	}
	return slices.Equal(ingressNames(a), ingressNames(b))
}

func ingressNames(cp *cpolicy) []portName {
	var out []portName
	for _, r := range cp.rules[policy.Ingress] {
		for _, s := range r.svcs {
			if s.name != "" {
				out = append(out, portName{s.name, policy.Protocol(s.proto)})
			}
		}
	}
	slices.SortFunc(out, func(x, y portName) int {
		if x.name != y.name {
			return strings.Compare(x.name, y.name)
		}
		return int(x.proto) - int(y.proto)
	})
	return slices.Compact(out)
}

// sameRules reports whether two versions of a policy give a group of
// direction d the same entries.
func sameRules(a, b *cpolicy, d policy.Direction) bool {
	return a.observe == b.observe && a.p.Tier == b.p.Tier && a.p.Isolate[d] == b.p.Isolate[d] &&
		a.isoNum[d] == b.isoNum[d] && slices.EqualFunc(a.rules[d], b.rules[d], func(x, y crule) bool {
		return x.num == y.num && x.action == y.action && x.any == y.any && slices.Equal(x.peers, y.peers) &&
			slices.EqualFunc(x.svcs, y.svcs, func(s, t svc) bool {
				return s.proto == t.proto && s.name == t.name && slices.Equal(s.ivs, t.ivs)
			})
	})
}

// subjectIdents calls f for the local identities cp's subject selects
// (and perhaps a few more).
func (c *Compiler) subjectIdents(cp *cpolicy, f func(*identInfo)) {
	s := cp.p.Subject
	if s.Segment != "" {
		for id := range c.idx.segs[1][c.pr.segIndex[s.Segment]].all() {
			if id.local > 0 {
				f(id)
			}
		}
		return
	}
	c.idx.matching(matcher{nsOnly: cp.p.Namespace, nsm: s.Namespaces, sel: s.Workloads}, func(id *identInfo) {
		if id.local > 0 {
			f(id)
		}
	})
}

// peerIdents calls f for the identities that match a rule peer (and
// perhaps a few more).
func (c *Compiler) peerIdents(def *peerDef, f func(*identInfo)) {
	switch {
	case def.seg >= 0:
		for id := range c.idx.segs[0][def.seg].all() {
			f(id)
		}
	case len(def.atoms) > 0:
		for cl, ids := range c.idx.cidr {
			if intersects(def.atoms, c.pr.cidr.classes[cl]) {
				for id := range ids.all() {
					f(id)
				}
			}
		}
	case def.wl != nil:
		c.idx.matching(*def.wl, f)
	}
}

// releaseRules forgets the rule numbers of old policy versions that the
// new versions do not use.
func (c *Compiler) releaseRules(changes []policyChange) {
	pr := c.pr
	for _, ch := range changes {
		cp := ch.old
		if cp == nil {
			continue
		}
		keep := map[RuleNum]bool{}
		if n := pr.pols[cp.key]; n != nil {
			for d := range n.rules {
				keep[n.isoNum[d]] = true
				for _, r := range n.rules[d] {
					keep[r.num] = true
				}
			}
		}
		release := func(n RuleNum, d policy.Direction, i int) {
			if n != 0 && !keep[n] {
				c.alloc.release(ruleKey(cp.key, d, i))
				pr.setRule(n, policy.RuleRef{})
			}
		}
		for d := range cp.rules {
			release(cp.isoNum[d], policy.Direction(d), -1)
			for i, r := range cp.rules[d] {
				release(r.num, policy.Direction(d), i)
			}
		}
	}
}

func ruleKey(pol string, d policy.Direction, index int) string {
	return "r:" + pol + "\x00" + d.String() + "\x00" + strconv.Itoa(index)
}

// refreshPolicies points a group that held an old policy version at the
// new versions: same key, so the same policies by key.
func (c *Compiler) refreshPolicies(g *groupInfo) {
	for i, cp := range g.pols {
		g.pols[i] = c.pr.pols[cp.key]
	}
}

// rebuildGroup refreshes a group's policies and computes its entries again.
func (c *Compiler) rebuildGroup(g *groupInfo) {
	c.refreshPolicies(g)
	c.linkGroup(g)
	c.computeWildcard(g)
	c.classesOfGroup(g, func(cl *classInfo) { c.computeEntry(g, cl) })
	for cl := range g.classes {
		if cl.seen != c.epoch {
			c.dropEntry(g, cl)
		}
	}
}
