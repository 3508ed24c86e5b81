package compile

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Compiler keeps the desired state of one host up to date as workloads
// come and go, at a cost proportional to what changes. It is not safe for
// concurrent use; the States it returns are immutable and may be shared.
type Compiler struct {
	host  string
	set   *policy.Set
	pr    *program
	alloc *allocBuilder

	workloads map[string]*wlInfo
	owner     map[netip.Addr]string // address → workload key
	idents    map[string]*identInfo
	classes   [2][NumLevels]map[string]*classInfo
	groups    [2]map[string]*groupInfo
	guards    map[string]*guardInfo
	outside   []*identInfo // by CIDR class

	classesByPeer [2]map[int32]*memberSet[*classInfo] // classes at the peer's level
	classesByName map[portName]*memberSet[*classInfo] // egress level-0 classes declaring it
	groupsByPeer  [2]map[int32]*memberSet[*groupInfo]
	groupsByName  map[portName]*memberSet[*groupInfo]

	scratch       [2][]int32 // reused by computeEntry
	cuts          []int      // reused by outcomeMap
	epoch         uint64     // marks visits, to list each class or group once without a set
	outcomes      []Outcome
	outcomeIDs    map[Outcome]OutcomeID
	outShared     bool           // a State shares outcomes: copy before writing a slot
	outFree       *pool[Outcome] // free outcome numbers
	outFreeShared bool
	orefs         *outcomeRefs
	tag           *stateTag // of the last State handed out (or the one compiled from)

	addrs  *smap[netip.Addr, IdentityID]
	attrs  *smap[IdentityID, IdentityAttrs]
	tables [2]tableMap
	guardT *smap[[2]GuardID, Guard]
	ranges []AddrRange

	// For SetPolicies: what the last compile was given, to tell what
	// changed, and an index to find the identities a change concerns.
	inv        inventory
	idx        identIndex
	byPtr      map[*policy.Workload]*wlInfo
	wlList     []*policy.Workload // the set's workloads when wlDirty is false
	wlDirty    bool               // workloads changed since (Upsert, Delete)
	shared     bool               // NewShared: policies are never edited in place
	wlEpoch    uint64
	polEpoch   uint64
	identEpoch uint64

	fullCompiles   int // SetPolicies calls that compiled everything (for tests)
	regionRebuilds int // groups brought up to date in a region only (for tests)
}

type wlInfo struct {
	w      *policy.Workload
	idents []*identInfo
	addrs  []netip.Addr
	seen   uint64
}

type identInfo struct {
	id       IdentityID
	key      string
	workload bool
	ns       string
	nsObj    *policy.Namespace
	labels   map[string]string
	ports    map[portName]int // only names some rule uses
	cidr     int32            // CIDR class of this address
	first    int32            // CIDR class of the workload's first address (subjects)
	segs     []bool           // segments that contain it, by cidr (peers, walls)
	subjSegs []bool           // the same by first (subjects)
	refs     int
	local    int
	class    [2][NumLevels]*classInfo
	group    [2]*groupInfo
	guard    *guardInfo
	seen     uint64 // visit mark, see Compiler.identEpoch
}

// New compiles set for host ("" for every host). prev, when not nil, is a
// State of an earlier compile whose numbering is kept for what did not
// change.
func New(set *policy.Set, host string, prev *State) (*Compiler, error) {
	c := &Compiler{host: host, alloc: newAllocBuilder(prev)}
	c.inheritOutcomes(prev)
	if err := c.reset(set); err != nil {
		return nil, err
	}
	return c, nil
}

// NewShared is New for a caller that never edits a policy of the sets it
// gives in place (a changed policy is a new *policy.Policy): the Compiler
// keeps the caller's policies instead of a deep copy of each, and
// SetPolicies tells an unchanged policy by its pointer instead of
// comparing it field by field. The agent, whose objects are immutable
// once decoded, uses it: it halves what the policies hold and makes a
// one-policy change cost the change, not a comparison of every policy.
func NewShared(set *policy.Set, host string, prev *State) (*Compiler, error) {
	c := &Compiler{host: host, alloc: newAllocBuilder(prev), shared: true}
	c.inheritOutcomes(prev)
	if err := c.reset(set); err != nil {
		return nil, err
	}
	return c, nil
}

// Compile is New followed by State.
func Compile(set *policy.Set, host string, prev *State) (*State, error) {
	c, err := New(set, host, prev)
	if err != nil {
		return nil, err
	}
	return c.State(), nil
}

func (c *Compiler) reset(set *policy.Set) error {
	pr, err := newProgram(set, c.alloc, c.shared)
	if err != nil {
		return err
	}
	c.set, c.pr = set, pr
	c.workloads, c.idents, c.guards = map[string]*wlInfo{}, map[string]*identInfo{}, map[string]*guardInfo{}
	c.owner = map[netip.Addr]string{}
	for d := range c.classes {
		for l := range c.classes[d] {
			c.classes[d][l] = map[string]*classInfo{}
		}
		c.groups[d] = map[string]*groupInfo{}
		c.classesByPeer[d] = map[int32]*memberSet[*classInfo]{}
		c.groupsByPeer[d] = map[int32]*memberSet[*groupInfo]{}
		c.tables[d] = tableMap{newSmapBy[TableKey, PortMap](tableShard), c.orefs}
	}
	c.classesByName = map[portName]*memberSet[*classInfo]{}
	c.groupsByName = map[portName]*memberSet[*groupInfo]{}
	c.outcomeIDs = map[Outcome]OutcomeID{}
	if len(c.outcomes) == 0 {
		c.outcomes = []Outcome{{}}
	}
	for i, o := range c.outcomes[1:] {
		if o != (Outcome{}) {
			c.outcomeIDs[o] = OutcomeID(i + 1)
			c.orefs.maybe = append(c.orefs.maybe, OutcomeID(i+1)) // freed unless an entry names it
		}
	}
	c.addrs, c.attrs, c.guardT = newSmap[netip.Addr, IdentityID](), newSmap[IdentityID, IdentityAttrs](), newSmap[[2]GuardID, Guard]()
	c.inv, c.idx, c.byPtr = newInventory(set), newIdentIndex(), map[*policy.Workload]*wlInfo{}
	c.buildOutside()
	for _, w := range set.Workloads {
		if err := c.UpsertWorkload(w); err != nil {
			return err
		}
	}
	c.wlList, c.wlDirty = slices.Clone(set.Workloads), false
	return nil
}

// tableShard puts a group's entries in one shard: a change to a group
// clones and compares one shard of a table.
func tableShard(k TableKey) uint64 { return uint64(k.Group) }

// buildOutside gives every CIDR class an identity for the addresses
// outside the inventory.
func (c *Compiler) buildOutside() {
	cs := &c.pr.cidr
	c.outside = make([]*identInfo, len(cs.classes))
	for cl := range cs.classes {
		id := &identInfo{key: "o\x00" + strconv.Itoa(cl) + "\x00" + atomKeyString(cs, cl), cidr: int32(cl), first: int32(cl)}
		c.acquireIdent(id, false)
		c.outside[cl] = c.idents[id.key]
	}
	c.ranges = make([]AddrRange, 0, len(cs.ivs))
	for _, iv := range cs.ivs {
		c.ranges = append(c.ranges, AddrRange{Lo: iv.lo, Hi: iv.hi, ID: c.outside[iv.class].id})
	}
}

// atomKeyString names a CIDR class by its CIDRs, sorted: atom numbers
// depend on the order policies come in, identity keys must not.
func atomKeyString(cs *cidrSpace, cl int) string {
	var parts []string
	for _, a := range cs.classes[cl] {
		parts = append(parts, cidrKey(cs.list[a]))
	}
	sort.Strings(parts)
	return strings.Join(parts, ";")
}

// UpsertWorkload adds a workload or replaces the one with its key.
func (c *Compiler) UpsertWorkload(w *policy.Workload) error {
	if w == nil {
		return fmt.Errorf("compile: upsert workload: nil")
	}
	old := c.workloads[w.Key()]
	wi := &wlInfo{w: w}
	local := c.host == "" || w.Host == c.host
	first := netip.Addr{}
	if len(w.IPs) > 0 {
		first = w.IPs[0].Unmap()
	}
	for _, a := range w.IPs {
		if owner, ok := c.owner[a.Unmap()]; ok && owner != w.Key() {
			return fmt.Errorf("compile: upsert workload %s: address %s belongs to %s", w.Key(), a, owner)
		}
	}
	base := c.workloadKey(w)
	for _, a := range w.IPs {
		a = a.Unmap()
		id := c.workloadIdent(w, base, a, first)
		id = c.acquireIdent(id, local)
		wi.idents = append(wi.idents, id)
		wi.addrs = append(wi.addrs, a)
		c.addrs.set(a, id.id)
		c.owner[a] = w.Key()
	}
	c.workloads[w.Key()] = wi
	if old != nil {
		c.releaseWorkload(old, wi)
	}
	c.byPtr[w], c.wlDirty = wi, true
	return nil
}

// DeleteWorkload removes the workload with key namespace/name, if any.
func (c *Compiler) DeleteWorkload(key string) {
	if old, ok := c.workloads[key]; ok {
		delete(c.workloads, key)
		c.releaseWorkload(old, nil)
		c.wlDirty = true
	}
}

// releaseWorkload drops old's references; addresses that repl (the new
// version of the workload, or nil) does not hold leave the address map.
func (c *Compiler) releaseWorkload(old, repl *wlInfo) {
	if c.byPtr[old.w] == old {
		delete(c.byPtr, old.w)
	}
	local := c.host == "" || old.w.Host == c.host
	keep := map[netip.Addr]bool{}
	if repl != nil {
		for _, a := range repl.addrs {
			keep[a] = true
		}
	}
	for i, id := range old.idents {
		if !keep[old.addrs[i]] {
			c.addrs.del(old.addrs[i])
			delete(c.owner, old.addrs[i])
		}
		c.releaseIdent(id, local)
	}
}

// workloadKey is the part of an identity key that all addresses of a
// workload share: namespace, labels and the named ports rules use.
func (c *Compiler) workloadKey(w *policy.Workload) wlKey {
	k := wlKey{}
	var b strings.Builder
	b.WriteString("w\x00" + w.Namespace + "\x00")
	writeLabels(&b, w.Labels)
	for _, np := range w.Ports {
		pn := portName{np.Name, np.Protocol}
		if c.pr.uses.names[pn] == 0 {
			continue
		}
		if _, dup := k.ports[pn]; dup {
			continue // the first declaration wins, as in Workload.Port
		}
		if k.ports == nil {
			k.ports = map[portName]int{}
		}
		k.ports[pn] = np.Port
	}
	writePorts(&b, k.ports)
	k.key = b.String()
	return k
}

type wlKey struct {
	key   string
	ports map[portName]int
}

func (c *Compiler) workloadIdent(w *policy.Workload, base wlKey, a, first netip.Addr) *identInfo {
	ns := c.pr.namespaces[w.Namespace]
	if ns == nil {
		ns = withNameLabel(&policy.Namespace{Name: w.Namespace})
	}
	id := &identInfo{workload: true, ns: w.Namespace, nsObj: ns, labels: w.Labels, ports: base.ports,
		cidr: c.pr.cidr.classOf(a), first: c.pr.cidr.classOf(first)}
	id.key = base.key + "\x00" + strconv.Itoa(int(id.cidr)) + "\x00" + strconv.Itoa(int(id.first))
	return id
}

func writeLabels(b *strings.Builder, labels map[string]string) {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString(k + "=" + labels[k] + "\x01")
	}
}

func writePorts(b *strings.Builder, ports map[portName]int) {
	keys := make([]string, 0, len(ports))
	for pn, p := range ports {
		keys = append(keys, pn.name+"/"+strconv.Itoa(int(pn.proto))+"="+strconv.Itoa(p))
	}
	sort.Strings(keys)
	b.WriteString(strings.Join(keys, ","))
}

// acquireIdent returns the identity with proto's key, creating it from
// proto when it is new, and counts one more reference (local or not).
func (c *Compiler) acquireIdent(proto *identInfo, local bool) *identInfo {
	id, ok := c.idents[proto.key]
	if !ok {
		id = proto
		id.id = IdentityID(c.alloc.numberNew("i:"+id.key, kindIdentity)) // c.idents holds what is numbered
		c.idents[id.key] = id
		c.attachClasses(id)
	}
	id.refs++
	if local && id.workload {
		id.local++
		if id.local == 1 {
			c.attachGroups(id)
		}
	}
	c.attrs.set(id.id, c.attrsOf(id))
	return id
}

func (c *Compiler) releaseIdent(id *identInfo, local bool) {
	id.refs--
	if local && id.workload {
		id.local--
		if id.local == 0 {
			for d := range id.group {
				c.releaseGroup(id.group[d])
				id.group[d] = nil
			}
		}
	}
	if id.refs > 0 {
		c.attrs.set(id.id, c.attrsOf(id))
		return
	}
	for d := range id.class {
		for l := range id.class[d] {
			c.releaseClass(id.class[d][l])
		}
	}
	c.releaseGuard(id.guard)
	c.idx.update(id, false)
	delete(c.idents, id.key)
	c.alloc.release("i:" + id.key)
	c.attrs.del(id.id)
}

func (c *Compiler) attrsOf(id *identInfo) IdentityAttrs {
	a := IdentityAttrs{Workload: id.workload, Local: id.local > 0, Guard: id.guard.id}
	for d := range id.class {
		for l, cl := range id.class[d] {
			a.Class[d][l] = cl.id
		}
		if g := id.group[d]; g != nil {
			a.Group[d] = g.id
		}
	}
	return a
}

// segments reports the segments that contain the identity, judged by the
// CIDR class cl (the probe's address for peers and walls, the first
// address for subjects, as the reference evaluator does).
func (c *Compiler) segments(id *identInfo, cl int32) []bool {
	pr := c.pr
	in := make([]bool, len(pr.segs))
	atoms := pr.cidr.classes[cl]
	for i, s := range pr.segs {
		if len(pr.segAtoms[i]) > 0 && intersects(pr.segAtoms[i], atoms) {
			in[i] = true
			continue
		}
		if s.Workloads != nil {
			m := matcher{nsm: s.Namespaces, sel: s.Workloads}
			in[i] = m.matches(id)
		}
	}
	return in
}

// State returns the current desired state. It is cheap: the maps are
// shared with the Compiler copy-on-write, shard by shard.
func (c *Compiler) State() *State {
	c.tag = newTag(c.tag, c.alloc.reused)
	c.alloc.reused = 0
	c.freeOutcomes(c.tag.seq)
	s := &State{Host: c.host, Addrs: c.addrs.freeze(), Identities: c.attrs.freeze(),
		Guards: c.guardT.freeze(), Buckets: c.pr.bucketOf, Outcomes: c.outcomes,
		Rules: c.pr.rules, Walls: c.set.Walls, Conflict: c.set.ConflictClasses,
		Ranges: c.ranges, alloc: c.alloc.freeze(c.tag.seq), tag: c.tag}
	for d := range c.tables {
		s.Tables[d] = c.tables[d].freeze()
	}
	c.outcomes = c.outcomes[:len(c.outcomes):len(c.outcomes)] // appends never write into a shared array
	c.outShared, c.outFreeShared, s.outFree = true, true, c.outFree
	c.pr.rulesShared = true
	s.rulesLog = c.pr.logRules()
	return s
}

// inheritOutcomes starts the outcome numbering from prev's (nil: none).
func (c *Compiler) inheritOutcomes(prev *State) {
	c.orefs, c.outFree = &outcomeRefs{}, newPool[Outcome]()
	if prev != nil {
		c.tag = prev.tag
		c.outcomes, c.outShared = prev.Outcomes, true
		if prev.outFree != nil {
			c.outFree, c.outFreeShared = prev.outFree, true
		}
	}
}

// Sizes counts the compiler's classes and groups (for reports).
type Sizes struct {
	Identities int
	Classes    [2][NumLevels]int
	Groups     [2]int
	Guards     int
}

// Sizes returns the current counts.
func (c *Compiler) Sizes() Sizes {
	s := Sizes{Identities: len(c.idents), Guards: len(c.guards)}
	for d := range c.classes {
		for l := range c.classes[d] {
			s.Classes[d][l] = len(c.classes[d][l])
		}
		s.Groups[d] = len(c.groups[d])
	}
	return s
}
