package compile

import (
	"maps"
	"sync/atomic"
)

// Numbering. Identities, classes, groups, guards, peers, rules and
// outcomes are numbered; a number that no key of a State holds any more
// is free, and a later State may give it to another key. So a lineage of
// States alternating between two policy sets uses a bounded set of
// numbers (issue 8: before, every switch took new ones, and the kernel's
// maps grew with every apply).
//
// Reuse is safe for the dataplane because a State is a function: Diff
// from any earlier State lists every element whose value changed,
// whatever the number meant before, and the dataplane writes those in one
// transaction (docs/dataplane.md, "Reused numbers"). Two rules keep the
// deltas small and the kernel's own garbage bounded:
//   - a number released while building a State becomes free only once
//     that State is handed out, so that no State holds one number for two
//     keys on the way, and a key released and taken again keeps it;
//   - a free number remembers the key that last held it, and that key,
//     coming back, gets it again: two sets alternated get the same
//     numbers each time, so going back is an empty delta.

// pool holds the free numbers of one kind: in the order they were freed
// (the oldest is given first to a key that never held one), each with the
// key that last held it.
type pool[K comparable] struct {
	queue []uint32     // free numbers, oldest first; may hold taken ones (skipped)
	owner map[uint32]K // free number → the key that last held it
	ghost map[K]uint32 // that key → its number, while the number is free
	at    map[uint32]uint64
	// at: free number → the first State (its tag's seq) without it
}

func newPool[K comparable]() *pool[K] {
	return &pool[K]{owner: map[uint32]K{}, ghost: map[K]uint32{}, at: map[uint32]uint64{}}
}

func (p *pool[K]) clone() *pool[K] {
	return &pool[K]{queue: append([]uint32(nil), p.queue...), owner: maps.Clone(p.owner),
		ghost: maps.Clone(p.ghost), at: maps.Clone(p.at)}
}

// put frees n, last held by key, as of the State with seq at.
func (p *pool[K]) put(key K, n uint32, at uint64) {
	if _, dup := p.owner[n]; dup {
		return
	}
	p.owner[n], p.ghost[key], p.at[n] = key, n, at
	p.queue = append(p.queue, n)
}

// take returns a free number for key, its own old one if it is still
// free, and the seq of the State it was freed in; ok false when none is
// free.
func (p *pool[K]) take(key K) (n uint32, freed uint64, ok bool) {
	if n, ok = p.ghost[key]; ok {
		return n, p.remove(n), true
	}
	for len(p.queue) > 0 {
		n, p.queue = p.queue[0], p.queue[1:]
		if _, free := p.owner[n]; free {
			return n, p.remove(n), true
		}
	}
	return 0, 0, false
}

func (p *pool[K]) remove(n uint32) (freed uint64) {
	if k, ok := p.owner[n]; ok {
		if p.ghost[k] == n {
			delete(p.ghost, k)
		}
		freed = p.at[n]
		delete(p.owner, n)
		delete(p.at, n)
	}
	if len(p.queue) > 2*len(p.owner)+64 { // drop the taken numbers the queue still holds
		q := p.queue[:0]
		for _, m := range p.queue {
			if _, free := p.owner[m]; free {
				q = append(q, m)
			}
		}
		p.queue = q
	}
	return freed
}

func (p *pool[K]) len() int { return len(p.owner) }

// allocBuilder numbers identities, classes, groups, guards, peers and
// rules: a key keeps the number it has in the previous State, a new key
// takes a free number (its own old one when it is free), else the next.
type allocBuilder struct {
	prev    *allocState // the State a full compile starts from; nil once a State is out
	cur     *allocState
	pools   [numKinds]*pool[string]
	shared  [numKinds]bool      // pools[k] belongs to a State too: clone before writing
	pending map[string]released // released since the last State: free once it is out
	reused  uint64              // the latest State that freed a number taken since the last State
}

// checkNewKeys makes numberNew check its callers' claim; the package's
// tests turn it on.
var checkNewKeys = false

type released struct {
	n    uint32
	kind allocKind
}

type allocKind int

const (
	kindIdentity allocKind = iota
	kindClass
	kindGroup
	kindGuard
	kindPeer
	kindRule
	numKinds
)

// allocState is the numbering a State carries: the number of every key,
// the next never-used number and the free numbers of every kind.
type allocState struct {
	ids   *smap[string, uint32]
	next  [numKinds]uint32
	pools [numKinds]*pool[string]
}

// kindOf tells a key's kind by its prefix (see the callers of number).
func kindOf(key string) allocKind {
	switch key[0] {
	case 'i':
		return kindIdentity
	case 'c':
		return kindClass
	case 'g':
		return kindGroup
	case 'u':
		return kindGuard
	case 'p':
		return kindPeer
	}
	return kindRule
}

func newAllocBuilder(prev *State) *allocBuilder {
	a := &allocBuilder{cur: &allocState{ids: newSmap[string, uint32]()},
		pending: map[string]released{}}
	for k := range a.cur.next {
		a.cur.next[k] = 1
		a.pools[k] = newPool[string]()
	}
	if prev != nil && prev.alloc != nil {
		a.prev = prev.alloc
		a.cur.next = prev.alloc.next
		for k := range a.pools {
			if p := prev.alloc.pools[k]; p != nil {
				a.pools[k], a.shared[k] = p, true
			}
		}
	}
	return a
}

func (a *allocBuilder) number(key string, kind allocKind) uint32 {
	if n, ok := a.cur.ids.get(key); ok {
		return n
	}
	return a.numberNew(key, kind)
}

// numberNew is number for a key the builder has not numbered (or has
// released since): the callers that keep their own map of what they
// numbered (identities, classes) skip a lookup of every new key in the
// largest map of the compile.
func (a *allocBuilder) numberNew(key string, kind allocKind) uint32 {
	if checkNewKeys {
		if _, ok := a.cur.ids.get(key); ok {
			panic("compile: internal error: " + key + " is numbered already")
		}
	}
	var n uint32
	if r, ok := a.pending[key]; ok {
		n = r.n
		delete(a.pending, key)
	} else if a.prev != nil {
		n, _ = a.prev.ids.get(key)
	}
	if n == 0 && a.pools[kind].len() > 0 {
		a.writable(kind)
		var freed uint64
		n, freed, _ = a.pools[kind].take(key)
		a.reused = max(a.reused, freed)
	}
	if n == 0 {
		n = a.cur.next[kind]
		a.cur.next[kind]++
	}
	a.cur.ids.set(key, n)
	return n
}

// writable makes the pool of kind the builder's own.
func (a *allocBuilder) writable(kind allocKind) {
	if a.shared[kind] {
		a.pools[kind], a.shared[kind] = a.pools[kind].clone(), false
	}
}

// release gives up key's number: it is free once the next State is out.
func (a *allocBuilder) release(key string) {
	n, ok := a.cur.ids.get(key)
	if !ok {
		return
	}
	a.cur.ids.del(key)
	a.pending[key] = released{n, kindOf(key)}
}

// freeze hands out the numbering for the State with seq. A full
// compile's first State frees the previous State's keys that it did not
// take again.
func (a *allocBuilder) freeze(seq uint64) *allocState {
	if a.prev != nil {
		a.prev.ids.each(func(key string, n uint32) {
			if _, ok := a.cur.ids.get(key); !ok {
				a.pending[key] = released{n, kindOf(key)}
			}
		})
		a.prev = nil
	}
	for key, r := range a.pending {
		a.writable(r.kind)
		a.pools[r.kind].put(key, r.n, seq)
	}
	clear(a.pending)
	s := &allocState{ids: a.cur.ids.freeze(), next: a.cur.next, pools: a.pools}
	for k := range a.shared {
		a.shared[k] = true
	}
	return s
}

// Outcomes are numbered by value and held by the port maps of the
// verdict tables: outcomeRefs counts, per outcome, the port ranges of
// table entries that name it, and an outcome no range names is freed
// when the next State is handed out.
type outcomeRefs struct {
	refs  []int32     // by OutcomeID
	maybe []OutcomeID // whose count fell to zero (or that were made) since the last State
}

func (r *outcomeRefs) add(m PortMap, delta int32) {
	for _, pr := range m {
		id := int(pr.Outcome)
		for id >= len(r.refs) {
			r.refs = append(r.refs, 0)
		}
		r.refs[id] += delta
		if r.refs[id] == 0 {
			r.maybe = append(r.maybe, pr.Outcome)
		}
	}
}

// tableMap is a verdict table that counts the outcomes its entries name.
type tableMap struct {
	*smap[TableKey, PortMap]
	refs *outcomeRefs
}

func (t tableMap) set(k TableKey, m PortMap) {
	old, had := t.get(k)
	t.smap.set(k, m)
	t.refs.add(m, 1)
	if had {
		t.refs.add(old, -1)
	}
}

func (t tableMap) del(k TableKey) {
	if old, ok := t.get(k); ok {
		t.smap.del(k)
		t.refs.add(old, -1)
	}
}

// outcomeID numbers an outcome: the one it has, else a free number (its
// own old one when it is free), else the next.
func (c *Compiler) outcomeID(o Outcome) OutcomeID {
	if id, ok := c.outcomeIDs[o]; ok {
		return id
	}
	var id OutcomeID
	if c.outFree.len() > 0 {
		c.outFreeOwn()
		n, freed, _ := c.outFree.take(o)
		c.alloc.reused = max(c.alloc.reused, freed)
		id = OutcomeID(n)
		c.writableOutcomes()
		c.outcomes[id] = o
	} else {
		id = OutcomeID(len(c.outcomes))
		c.outcomes = append(c.outcomes, o)
	}
	c.outcomeIDs[o] = id
	c.orefs.maybe = append(c.orefs.maybe, id)
	return id
}

// writableOutcomes copies the outcome table before a slot is written in
// place: States share it.
func (c *Compiler) writableOutcomes() {
	if c.outShared {
		c.outcomes, c.outShared = append([]Outcome(nil), c.outcomes...), false
	}
}

func (c *Compiler) outFreeOwn() {
	if c.outFreeShared {
		c.outFree, c.outFreeShared = c.outFree.clone(), false
	}
}

// freeOutcomes frees the outcomes that no table entry names any more: their
// slot becomes the zero Outcome (none).
func (c *Compiler) freeOutcomes(seq uint64) {
	for _, id := range c.orefs.maybe {
		if int(id) < len(c.orefs.refs) && c.orefs.refs[id] > 0 || int(id) >= len(c.outcomes) {
			continue
		}
		o := c.outcomes[id]
		if o == (Outcome{}) {
			continue
		}
		c.writableOutcomes()
		c.outFreeOwn()
		c.outcomes[id] = Outcome{}
		delete(c.outcomeIDs, o)
		c.outFree.put(o, uint32(id), seq)
	}
	c.orefs.maybe = c.orefs.maybe[:0]
}

// stateTag places a State in its lineage: a unique id, its place in the
// lineage, the latest State that freed a number it reuses, and the same
// of up to maxTagDepth ancestors (oldest first).
type stateTag struct {
	id, seq uint64
	reused  uint64 // 0: it reuses no number
	anc     []tagRef
}

type tagRef struct{ id, reused uint64 }

// maxTagDepth bounds the ancestors a State remembers.
const maxTagDepth = 64

var tagIDs atomic.Uint64

func newTag(parent *stateTag, reused uint64) *stateTag {
	t := &stateTag{id: tagIDs.Add(1), seq: 1, reused: reused}
	if parent != nil {
		t.seq = parent.seq + 1
		anc := parent.anc
		if len(anc) >= maxTagDepth {
			anc = anc[len(anc)-maxTagDepth+1:]
		}
		t.anc = append(append(make([]tagRef, 0, len(anc)+1), anc...), tagRef{parent.id, parent.reused})
	}
	return t
}

// SafeSwitch reports whether the dataplane may go from old to new in one
// transaction without a number changing its meaning at that instant:
// old is an ancestor of new (or new of old) within the States a State
// remembers, and no number in use in old was freed and taken again on the
// way. (A number freed in one State is taken again only in a later
// State, so this holds from every State to its next, and back.) When it
// does not hold, a packet whose walk through the kernel's tables spans
// the switch could read a number with its old meaning and look it up with
// its new one; the dataplane then writes a new generation instead.
func SafeSwitch(old, new *State) bool {
	if old == nil || new == nil || old.tag == nil || new.tag == nil {
		return false
	}
	if old.tag.id == new.tag.id {
		return true
	}
	return descends(old.tag, new.tag) || descends(new.tag, old.tag)
}

// descends reports whether b descends from a, with no number held in a
// freed and taken again between them.
func descends(a, b *stateTag) bool {
	reused := b.reused
	for i := len(b.anc) - 1; i >= 0; i-- {
		if b.anc[i].id == a.id {
			return reused <= a.seq
		}
		reused = max(reused, b.anc[i].reused)
	}
	return false
}
