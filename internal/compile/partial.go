package compile

import "github.com/bulkhead-dev/bulkhead/internal/policy"

// A policy edit that keeps the layout of its rules — the same rules, in
// the same places, naming the same peers — and changes only their ports,
// protocols or actions can change a group's entries only where the old or
// the new version of a changed rule covers: its region. Only the classes
// that a rule covering the region names (or, for egress, whose named
// ports such a rule resolves) are computed again, so that a platform
// policy that every group holds is changed at a cost that follows what
// its rules cover, not every class of every group.

// region is a set of ports by protocol bucket.
type region struct {
	all     bool       // every bucket, every port
	buckets [][][2]int // by bucket: port intervals
}

// add records the ports a rule covers: all of them when it names no
// service, and the whole bucket for a named port (resolved per peer).
func (rg *region) add(pr *program, r *crule) {
	if len(r.svcs) == 0 {
		rg.all = true
		return
	}
	if rg.buckets == nil {
		rg.buckets = make([][][2]int, len(pr.bucketProt))
	}
	for _, s := range r.svcs {
		b := pr.bucketOf[s.proto]
		if s.name != "" {
			rg.buckets[b] = append(rg.buckets[b], [2]int{0, 0xffff})
			continue
		}
		rg.buckets[b] = append(rg.buckets[b], s.ivs...)
	}
}

// union adds o's ports to rg (which shares nothing with o).
func (rg *region) union(o *region) {
	rg.all = rg.all || o.all
	if rg.buckets == nil && o.buckets != nil {
		rg.buckets = make([][][2]int, len(o.buckets))
	}
	for b, ivs := range o.buckets {
		rg.buckets[b] = append(rg.buckets[b], ivs...)
	}
}

// meets reports whether rule r covers a port of the region.
func (rg *region) meets(pr *program, r *crule) bool {
	if rg.all || len(r.svcs) == 0 {
		return true
	}
	for _, s := range r.svcs {
		ivs := rg.buckets[pr.bucketOf[s.proto]]
		if s.name != "" && len(ivs) > 0 {
			return true
		}
		for _, a := range s.ivs {
			for _, b := range ivs {
				if a[0] <= b[1] && b[0] <= a[1] {
					return true
				}
			}
		}
	}
	return false
}

// editRegion returns the region of the rules of direction d that differ
// between two versions of a policy, or nil when the edit changes more
// than ports, protocols and actions: the place of the policy in its
// groups, its isolation or mode, or the number or peers of its rules.
func (c *Compiler) editRegion(a, b *cpolicy, d policy.Direction) *region {
	if !sameShape(a, b) || a.observe != b.observe || a.p.Isolate[d] != b.p.Isolate[d] ||
		a.isoNum[d] != b.isoNum[d] || len(a.rules[d]) != len(b.rules[d]) {
		return nil
	}
	rg := &region{}
	for i := range a.rules[d] {
		x, y := &a.rules[d][i], &b.rules[d][i]
		if x.any != y.any || !equalInt32s(x.peers, y.peers) {
			return nil
		}
		if x.num != y.num || x.action != y.action || !sameServices(x.svcs, y.svcs) {
			rg.add(c.pr, x)
			rg.add(c.pr, y)
		}
	}
	return rg
}

func equalInt32s(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func sameServices(a, b []svc) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].proto != b[i].proto || a[i].name != b[i].name || len(a[i].ivs) != len(b[i].ivs) {
			return false
		}
		for j := range a[i].ivs {
			if a[i].ivs[j] != b[i].ivs[j] {
				return false
			}
		}
	}
	return true
}

// rebuildRegion brings a group whose policies changed only in rg up to
// date: its rule index stays (the layout is the same), its wildcard and
// the entries of the classes the region concerns are computed again.
func (c *Compiler) rebuildRegion(g *groupInfo, rg *region) {
	c.regionRebuilds++
	c.refreshPolicies(g)
	c.computeWildcard(g)
	c.epoch++
	visit := func(cl *classInfo) {
		if cl.seen != c.epoch {
			cl.seen = c.epoch
			c.computeEntry(g, cl)
		}
	}
	for pos := range g.rx.loc {
		r := g.rule(int32(pos))
		if !rg.meets(c.pr, r) {
			continue
		}
		for _, p := range r.peers {
			for cl := range c.classesByPeer[g.dir][p].all() {
				visit(cl)
			}
		}
		if g.dir != policy.Egress {
			continue
		}
		for _, s := range r.svcs {
			if s.name != "" {
				for cl := range c.classesByName[portName{s.name, policy.Protocol(s.proto)}].all() {
					visit(cl)
				}
			}
		}
	}
}
