package nft

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// model is what one generation holds in the kernel, kept in memory so
// that an update is a diff and nothing big is ever read back.
type model struct {
	b           *builder
	state       *compile.State         // nil: nothing but anti-spoofing
	atts        []dataplane.Attachment // as last written
	own         map[ownElem]bool
	ifaces      map[string]bool
	pms         *portMaps
	attrs       *attrIndex                 // which attribute elements are in the kernel (attrs.go)
	outcomes    []string                   // rendering signature by outcome id; "" for none yet
	outRule     []string                   // rule key by outcome id
	outChain    map[compile.OutcomeID]bool // outcomes that have a chain (they log)
	walls       []string                   // signature by wall index
	nconf       int                        // conflict chains made
	buckets     [256]uint8
	counters    map[string]string                  // counter object → wall name ("" for the fixed ones)
	ruleOf      map[string]string                  // rule key → rule id: the elements of the rule counter set
	ruleRefs    map[string]int                     // rule key → outcomes that count into it
	retired     map[string]int                     // rule key → the Apply that stopped naming it: deleted one Apply later
	lingering   map[int]lingerOut                  // freed outcomes: their elements go one Apply later
	lingerIdent map[compile.IdentityID]lingerIdent // freed identities, likewise
	slotRanges  [2][]compile.AddrRange             // what each range slot holds
	applies     int                                // Applies made with this model
	byRule      [][]compile.OutcomeID              // rule number → outcomes naming it (as Rule or WouldDeny)
	wallOf      map[string]string                  // wall counter name → wall name
	bucketChain [256]bool                          // bucket chains made
	err         error                              // a number the layout cannot hold (checkIdentity)
	claim       map[string]string                  // rule key → owner tag (ownerTag) of the rule that holds it (keyFor)
	keyOf       map[string]string                  // owner tag → its rule key
}

type ownElem struct {
	iface string
	addr  netip.Addr
}

func newModel(b *builder) *model {
	m := &model{b: b, own: map[ownElem]bool{}, ifaces: map[string]bool{}, pms: newPortMaps(), attrs: newAttrIndex(),
		outcomes: []string{""}, outRule: []string{""}, outChain: map[compile.OutcomeID]bool{},
		counters: map[string]string{}, ruleOf: map[string]string{}, ruleRefs: map[string]int{}, retired: map[string]int{}, lingering: map[int]lingerOut{}, lingerIdent: map[compile.IdentityID]lingerIdent{}, wallOf: map[string]string{},
		claim: map[string]string{}, keyOf: map[string]string{}}
	return m
}

// create writes a whole new generation for d into t (the caller adds the
// base rules and the sweep).
func (m *model) create(t *tx, d dataplane.Desired) {
	w := t.pre
	w.pre = w // the whole generation is preparatory: nothing refers to it yet
	defer func() { w.pre = nil }()
	w.sets = append(w.sets, m.b.sets(t.table)...)
	w.chains = append(w.chains, m.b.chainNames()...)
	w.rules = append(w.rules, m.b.fixedRules(d.State != nil)...)
	for _, e := range m.b.fixedVerdicts() {
		w.add(m.b.n(setVerdicts), e)
	}
	for _, n := range []string{counterSpoofed, counterNoEntry, counterEscal} {
		if _, ok := m.counters[n]; !ok {
			w.counters = append(w.counters, n)
			m.counters[n] = ""
		}
	}
	m.update(w, d)
	// Counters of walls gone away are still counted into by the live
	// generation until the switch: delete them in it, never before. (Rule
	// counter elements go one Apply later still: see sweepCounters.)
	t.delObjs, w.delObjs = append(t.delObjs, w.delObjs...), nil
}

// update writes the changes from the model to d into t and moves the
// model to d. If the transaction then fails, the model is wrong: the
// caller must start a new generation.
func (m *model) update(t *tx, d dataplane.Desired) {
	m.attachments(t, d.Attachments)
	if d.State == nil {
		m.state = nil
		return
	}
	delta := compile.Diff(m.state, d.State)
	// A new generation looks at every outcome.
	full := m.state == nil
	wallsChanged := m.state == nil || !sameWalls(m.state.Walls, d.State.Walls) || len(m.state.Conflict) != len(d.State.Conflict)
	m.outcomeElems(t, d.State, delta.Outcomes, delta.RuleChanges, full)
	if wallsChanged {
		m.wallChains(t, d.State)
		m.counterObjects(t, d.State)
	}
	m.bucketElems(t, d.State)
	m.addrElems(t, delta.Addrs)
	if m.state == nil || delta.Ranges != nil {
		m.rangeElems(t, d.State.Ranges, m.state == nil)
	}
	wake, woken := m.attrs.nameValues(delta.Tables, delta.Guards)
	m.identityElems(t, delta.Identities)
	if woken {
		m.wakeAttrs(t, d.State, wake)
	}
	for dir := range delta.Tables {
		m.tableElems(t, policy.Direction(dir), delta.Tables[dir])
	}
	m.guardElems(t, delta.Guards)
	m.state = d.State
}

func (m *model) attachments(t *tx, atts []dataplane.Attachment) {
	if sameAttachments(m.atts, atts) {
		return
	}
	m.atts = cloneAttachments(atts)
	own, ifs := map[ownElem]bool{}, map[string]bool{}
	for _, a := range atts {
		ifs[a.Interface] = true
		for _, ad := range a.Addrs {
			own[ownElem{a.Interface, ad.Unmap()}] = true
		}
	}
	for i := range ifs {
		if !m.ifaces[i] {
			t.add(m.b.n(setIfaces), nftables.SetElement{Key: ifname(i)})
		}
	}
	for i := range m.ifaces {
		if !ifs[i] {
			t.del(m.b.n(setIfaces), nftables.SetElement{Key: ifname(i)})
		}
	}
	ownSet := func(e ownElem) string {
		if e.addr.Is4() {
			return m.b.n(setOwn4)
		}
		return m.b.n(setOwn6)
	}
	for e := range own {
		if !m.own[e] {
			t.add(ownSet(e), nftables.SetElement{Key: ownKey(e.iface, e.addr)})
		}
	}
	for e := range m.own {
		if !own[e] {
			t.del(ownSet(e), nftables.SetElement{Key: ownKey(e.iface, e.addr)})
		}
	}
	m.own, m.ifaces = own, ifs
}

func sameWalls(a, b []*policy.Wall) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name {
			return false
		}
	}
	return true
}

func (m *model) wallChains(t *tx, s *compile.State) {
	for i, w := range s.Walls {
		rules, sig := m.b.wallRules(w)
		name := m.b.n(wallChain(i + 1))
		switch {
		case i >= len(m.walls):
			t.pre.chains = append(t.pre.chains, name)
			t.pre.addRules(name, false, rules)
			m.walls = append(m.walls, sig)
		case m.walls[i] != sig:
			t.addRules(name, true, rules)
			m.walls[i] = sig
		}
	}
	// Chains of walls that went away stay, unreferenced, until the next
	// generation: their guard entries are gone with the wall.
	for ; m.nconf < len(s.Conflict); m.nconf++ {
		name := m.b.n(conflictChain(m.nconf + 1))
		t.pre.chains = append(t.pre.chains, name)
		t.pre.addRules(name, false, m.b.conflictRules())
	}
}

// counterObjects creates the counters of new walls (and the fixed ones)
// and deletes those of walls that went away (after the chains that
// referred to them were rewritten, in the same transaction).
func (m *model) counterObjects(t *tx, s *compile.State) {
	want := map[string]string{counterSpoofed: "", counterNoEntry: "", counterEscal: ""}
	wallOf := map[string]string{}
	for _, w := range s.Walls {
		n := wallCounterName(w.Name)
		want[n], wallOf[n] = w.Name, w.Name
	}
	for n := range want {
		if _, ok := m.counters[n]; !ok {
			t.pre.counters = append(t.pre.counters, n)
		}
	}
	for n := range m.counters {
		if _, ok := want[n]; !ok && !m.referenced(n) {
			t.delObjs = append(t.delObjs, n)
		} else if !ok {
			want[n] = m.counters[n] // still in an old wall's chain
		}
	}
	m.counters, m.wallOf = want, wallOf
}

// referenced reports whether a chain of the generation that is not
// rewritten still counts into n: only the chains of walls that went away.
func (m *model) referenced(n string) bool {
	for _, sig := range m.walls {
		if w, ok := strings.CutPrefix(sig, "wall|"); ok && wallCounterName(w) == n {
			return true
		}
	}
	return false
}

// bucketElems writes the buckets map (protocol → jump to the bucket's
// chain), making the chains of buckets not seen before in the
// preparatory transaction. A generation's bucket chains stay until it goes.
func (m *model) bucketElems(t *tx, s *compile.State) {
	if m.state != nil && m.buckets == s.Buckets {
		return
	}
	name := m.b.n(setBuckets)
	for p := 0; p < 256; p++ {
		bk := s.Buckets[p]
		if !m.bucketChain[bk] {
			chain := m.b.n(bucketChain(bk))
			t.pre.chains = append(t.pre.chains, chain)
			t.pre.addRules(chain, false, m.b.bucketRules(bk))
			m.bucketChain[bk] = true
		}
		e := nftables.SetElement{Key: []byte{byte(p)},
			VerdictData: &expr.Verdict{Kind: expr.VerdictJump, Chain: m.b.n(bucketChain(bk))}}
		if m.state == nil {
			t.add(name, e)
		} else if m.buckets[p] != bk {
			t.del(name, nftables.SetElement{Key: []byte{byte(p)}})
			t.add(name, e)
		}
	}
	m.buckets = s.Buckets
}

func (m *model) addrElems(t *tx, changes []compile.Change[netip.Addr, compile.IdentityID]) {
	for _, c := range changes {
		name := m.b.n(setAddr6)
		if c.Key.Unmap().Is4() {
			name = m.b.n(setAddr4)
		}
		k := addrKey(c.Key)
		if c.Op != compile.Add {
			t.del(name, nftables.SetElement{Key: k})
		}
		if c.Op != compile.Delete {
			t.add(name, nftables.SetElement{Key: k, Val: u32(uint32(c.New))})
		}
	}
}

// rangeElems writes the outside ranges: into slot 0 for a new
// generation; else into the slot the chains do not look up, emptied
// first, in the preparatory transaction, and the switch rewrites the
// chains that look up ranges to look up that slot. The ranges change
// with the policy's CIDRs; an interval set's backend may publish its
// changes only after the transaction is live (as pipapo does), and a
// range missing for a moment would skip a wall, so the slot the chains
// use is never written. When the other slot already holds these ranges
// (two policy sets alternated), only the chains are rewritten.
func (m *model) rangeElems(t *tx, ranges []compile.AddrRange, fresh bool) {
	w := t.pre
	if fresh {
		m.b.rangeSlot = 0
	} else {
		m.b.rangeSlot = 1 - m.b.rangeSlot
		t.rules = append(t.rules, m.b.rangeChains()...)
		if slices.Equal(m.slotRanges[m.b.rangeSlot], ranges) {
			return
		}
		w.flushSets = append(w.flushSets, m.b.n(rangeSet(4, m.b.rangeSlot)), m.b.n(rangeSet(6, m.b.rangeSlot)))
	}
	m.slotRanges[m.b.rangeSlot] = ranges
	for _, r := range ranges {
		name := m.b.n(rangeSet(6, m.b.rangeSlot))
		if r.Lo.Is4() {
			name = m.b.n(rangeSet(4, m.b.rangeSlot))
		}
		w.add(name, nftables.SetElement{Key: addrKey(r.Lo), Val: u32(uint32(r.ID))})
		if next := r.Hi.Next(); next.IsValid() && next.Is4() == r.Lo.Is4() {
			w.add(name, nftables.SetElement{Key: addrKey(next), IntervalEnd: true})
		}
	}
}

// identityElems writes the identities' attributes (one map per attribute,
// see attrSet; only the named ones, see attrs.go) and groups. A freed identity's elements stay one Apply
// longer (see sweep): a packet whose walk spans the switch may have read
// its number from an address map before it (an outside range, whose
// chains the switch rewrites) and look it up after it; missing, the guard
// lookup would fail and skip a wall.
func (m *model) identityElems(t *tx, changes []compile.Change[compile.IdentityID, compile.IdentityAttrs]) {
	for _, c := range changes {
		k := u32(uint32(c.Key))
		old, nw := c.Old, c.New
		was, lingers := m.lingerIdent[c.Key]
		m.checkIdentity(c.Key, nw)
		switch {
		case c.Op == compile.Add && lingers:
			old = was.attrs
			delete(m.lingerIdent, c.Key)
			m.attrElems(t, c.Key, &old, nw)
		case c.Op == compile.Add:
			old = compile.IdentityAttrs{}
			m.attrElems(t, c.Key, nil, nw)
		case c.Op == compile.Delete:
			m.lingerIdent[c.Key] = lingerIdent{at: m.applies, attrs: old}
			continue
		default:
			m.attrElems(t, c.Key, &old, nw)
		}
		for _, d := range []policy.Direction{policy.Ingress, policy.Egress} {
			og, ng := groupOf(old, d), groupOf(nw, d)
			if og == ng {
				continue
			}
			if og != 0 {
				t.del(m.b.n(groupSet(d)), nftables.SetElement{Key: k})
			}
			if ng != 0 {
				t.add(m.b.n(groupSet(d)), nftables.SetElement{Key: k, Val: u32(groupWord(ng))})
			}
		}
	}
}

// checkIdentity records an error when an identity's numbers do not fit
// the carriers' words (classWord, groupWord): far beyond any state the
// compiler makes (its numbers are dense), but never written wrapped.
func (m *model) checkIdentity(id compile.IdentityID, a compile.IdentityAttrs) {
	for d := range a.Class {
		for _, c := range a.Class[d] {
			if c > maxClass && m.err == nil {
				m.err = errorf("identity %d: class %d beyond the dataplane's %d", id, c, maxClass)
			}
		}
		if a.Group[d] > maxGroup && m.err == nil {
			m.err = errorf("identity %d: group %d beyond the dataplane's %d", id, a.Group[d], maxGroup)
		}
	}
}

// lingerOut is a freed outcome still in the kernel: the Apply that freed
// it, its rendering and the rule key it counts into.
type lingerOut struct {
	at        int
	sig, rule string
}

// lingerIdent is a freed identity still in the kernel: the Apply that
// freed it and what it had.
type lingerIdent struct {
	at    int
	attrs compile.IdentityAttrs
}

// sweepIdentities deletes the identities freed an Apply ago.
func (m *model) sweepIdentities(t *tx) {
	for id, l := range m.lingerIdent {
		if l.at >= m.applies {
			continue
		}
		k := u32(uint32(id))
		m.dropAttrs(t, id, l.attrs)
		for _, d := range []policy.Direction{policy.Ingress, policy.Egress} {
			if groupOf(l.attrs, d) != 0 {
				t.del(m.b.n(groupSet(d)), nftables.SetElement{Key: k})
			}
		}
		delete(m.lingerIdent, id)
	}
}

// groupOf is the group that judges side d of an identity: none (the side
// allows) unless it is a workload on this host with a group.
func groupOf(a compile.IdentityAttrs, d policy.Direction) compile.GroupID {
	if !a.Workload || !a.Local {
		return 0
	}
	return a.Group[d]
}

func (m *model) tableElems(t *tx, d policy.Direction, changes []compile.Change[compile.TableKey, compile.PortMap]) {
	name := m.b.n(tabSet(d))
	ids := make([]uint32, len(changes))
	for i, c := range changes { // acquire first, so that a shared port map never drops to zero refs on the way
		if c.Op != compile.Delete {
			ids[i] = m.pms.acquire(t.pre, m.b, c.New)
		}
	}
	for i, c := range changes {
		var old uint32
		if c.Op != compile.Add {
			old = m.pms.release(c.Old)
		}
		if old == ids[i] {
			continue
		}
		k := tabKey(c.Key)
		if c.Op != compile.Add {
			t.del(name, nftables.SetElement{Key: k})
		}
		if c.Op != compile.Delete {
			t.add(name, nftables.SetElement{Key: k, Val: u32(ids[i])})
		}
	}
}

func (m *model) guardElems(t *tx, changes []compile.Change[[2]compile.GuardID, compile.Guard]) {
	name := m.b.n(setGuards)
	for _, c := range changes {
		k := guardKey(c.Key)
		if c.Op != compile.Add {
			t.del(name, nftables.SetElement{Key: k})
		}
		if c.Op != compile.Delete {
			t.add(name, nftables.SetElement{Key: k, VerdictData: m.guardVerdict(c.New)})
		}
	}
}

func (m *model) guardVerdict(g compile.Guard) *expr.Verdict {
	if g.Wall > 0 {
		return &expr.Verdict{Kind: expr.VerdictGoto, Chain: m.b.n(wallChain(int(g.Wall)))}
	}
	return &expr.Verdict{Kind: expr.VerdictJump, Chain: m.b.n(conflictChain(int(g.Conflict)))}
}

// portMaps shares port maps between table keys: many keys map to the
// same ports and outcomes, so the interval map (whose every update costs
// in proportion to its size) holds each distinct port map once.
//
// A port map nothing refers to any more is left in the kernel: deleting an
// element from the kernel's concatenated interval map (pipapo) costs in
// proportion to the map's size, per element (13 ms each at 5,000
// ranges), while adding one is cheap. Ids are never reused, so garbage is
// never referred to; once it outweighs the live ranges, Apply writes a new
// generation, which holds only live ones.
type portMaps struct {
	byKey   map[string]*portMap
	dead    map[string]*portMap // released, still in the kernel: revived when the same map comes back
	next    uint32
	garbage int // ranges of released port maps still in the kernel
	live    int // ranges of port maps in use
}

type portMap struct {
	id   uint32
	refs int
	m    compile.PortMap
}

func newPortMaps() *portMaps {
	return &portMaps{byKey: map[string]*portMap{}, dead: map[string]*portMap{}, next: 1}
}

func pmKey(m compile.PortMap) string {
	b := make([]byte, 0, len(m)*8)
	for _, r := range m {
		b = binary.BigEndian.AppendUint16(b, r.Lo)
		b = binary.BigEndian.AppendUint16(b, r.Hi)
		b = binary.BigEndian.AppendUint32(b, uint32(r.Outcome))
	}
	return string(b)
}

func (p *portMaps) acquire(t *tx, b *builder, m compile.PortMap) uint32 {
	k := pmKey(m)
	if pm, ok := p.byKey[k]; ok {
		pm.refs++
		return pm.id
	}
	if pm, ok := p.dead[k]; ok {
		// Its elements are still in the kernel, unchanged: they mean what
		// they meant (outcome numbers mean what the State says now).
		delete(p.dead, k)
		pm.refs, p.byKey[k] = 1, pm
		p.live, p.garbage = p.live+len(m), p.garbage-len(m)
		return pm.id
	}
	pm := &portMap{id: p.next, refs: 1, m: m}
	p.next++
	p.byKey[k] = pm
	p.live += len(m)
	for _, r := range m {
		t.add(b.n(setPorts), nftables.SetElement{Key: portKey(pm.id, r.Lo), KeyEnd: portKey(pm.id, r.Hi),
			Val: u32(uint32(r.Outcome))})
	}
	return pm.id
}

func (p *portMaps) release(m compile.PortMap) uint32 {
	k := pmKey(m)
	pm, ok := p.byKey[k]
	if !ok {
		return 0
	}
	pm.refs--
	if pm.refs == 0 {
		delete(p.byKey, k)
		p.dead[k] = pm
		p.live -= len(m)
		p.garbage += len(m)
	}
	return pm.id
}

// gcMin is the garbage (in ranges) tolerated whatever the live size.
const gcMin = 1000

// needsCompaction reports whether released port maps outweigh live ones.
func (p *portMaps) needsCompaction() bool { return p.garbage > max(gcMin, p.live) }

func (p *portMaps) len() (maps, ranges int) {
	for _, pm := range p.byKey {
		maps++
		ranges += len(pm.m)
	}
	return
}

func sameAttachments(a, b []dataplane.Attachment) bool {
	if len(a) != len(b) || a == nil != (b == nil) {
		return false
	}
	for i := range a {
		if a[i].Interface != b[i].Interface || !slices.Equal(a[i].Addrs, b[i].Addrs) {
			return false
		}
	}
	return true
}

func cloneAttachments(a []dataplane.Attachment) []dataplane.Attachment {
	out := make([]dataplane.Attachment, len(a))
	for i, x := range a {
		out[i] = x
		out[i].Addrs = slices.Clone(x.Addrs)
	}
	if a == nil {
		return nil
	}
	return out
}
