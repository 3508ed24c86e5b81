package compile

import (
	"sort"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// matcher is the workload half of a peer, segment or subject: a namespace
// restriction, a namespace match and a workload selector (nil: all).
type matcher struct {
	nsOnly string
	nsm    policy.NamespaceMatch
	sel    *policy.Selector
}

func (m *matcher) matches(id *identInfo) bool {
	if !id.workload || (m.nsOnly != "" && m.nsOnly != id.ns) {
		return false
	}
	return m.nsm.Matches(id.nsObj) && (m.sel == nil || m.sel.Matches(id.labels))
}

// selIndex is an inverted index from one label term of each matcher to the
// matcher, so that finding the matchers of an identity costs its labels
// plus the candidates, not the number of matchers.
type selIndex struct {
	byKey   map[string][]int32
	entries map[int32]matcher
}

func (x *selIndex) add(id int32, m matcher) {
	if x.byKey == nil {
		x.byKey, x.entries = map[string][]int32{}, map[int32]matcher{}
	}
	x.entries[id] = m
	for _, k := range indexKeys(m) {
		x.byKey[k] = append(x.byKey[k], id)
	}
}

func (x *selIndex) remove(id int32) {
	m, ok := x.entries[id]
	if !ok {
		return
	}
	delete(x.entries, id)
	for _, k := range indexKeys(m) {
		if l := without(x.byKey[k], id); len(l) > 0 {
			x.byKey[k] = l
		} else {
			delete(x.byKey, k)
		}
	}
}

// indexKeys picks the most selective term every match must satisfy.
func indexKeys(m matcher) []string {
	if m.sel != nil && len(m.sel.MatchLabels) > 0 {
		keys := make([]string, 0, len(m.sel.MatchLabels))
		for k := range m.sel.MatchLabels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return []string{"l\x00" + keys[0] + "\x00" + m.sel.MatchLabels[keys[0]]}
	}
	if m.nsOnly != "" {
		return []string{"n\x00" + m.nsOnly}
	}
	if m.nsm.Selector == nil && len(m.nsm.Names) > 0 {
		out := make([]string, 0, len(m.nsm.Names))
		for _, n := range m.nsm.Names {
			out = append(out, "n\x00"+n)
		}
		return dedupe(out)
	}
	if s := m.nsm.Selector; s != nil && len(m.nsm.Names) == 0 && len(s.MatchLabels) > 0 {
		keys := make([]string, 0, len(s.MatchLabels))
		for k := range s.MatchLabels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		return []string{"m\x00" + keys[0] + "\x00" + s.MatchLabels[keys[0]]}
	}
	return []string{"*"}
}

func dedupe(s []string) []string {
	sort.Strings(s)
	out := s[:0]
	for i, x := range s {
		if i == 0 || x != s[i-1] {
			out = append(out, x)
		}
	}
	return out
}

// query calls f for every matcher that matches id.
func (x *selIndex) query(id *identInfo, f func(int32)) {
	if x.byKey == nil || !id.workload {
		return
	}
	identTerms(id, func(key string) {
		for _, e := range x.byKey[key] {
			m := x.entries[e]
			if m.matches(id) {
				f(e)
			}
		}
	})
}

// identTerms lists the index terms a workload identity has: every
// matcher that matches it is indexed under one of them.
func identTerms(id *identInfo, f func(string)) {
	f("*")
	f("n\x00" + id.ns)
	for k, v := range id.labels {
		f("l\x00" + k + "\x00" + v)
	}
	for k, v := range id.nsObj.Labels {
		f("m\x00" + k + "\x00" + v)
	}
}

// identIndex is the other way round: from a term, segment or CIDR class
// to the identities that have it, so that a policy change finds the
// identities a subject or a peer may match without looking at all.
type identIndex struct {
	terms map[string]map[*identInfo]struct{}
	segs  [2]map[int]map[*identInfo]struct{} // by address (peers), by first address (subjects)
	cidr  map[int32]map[*identInfo]struct{}
}

func newIdentIndex() identIndex {
	return identIndex{terms: map[string]map[*identInfo]struct{}{},
		segs: [2]map[int]map[*identInfo]struct{}{{}, {}}, cidr: map[int32]map[*identInfo]struct{}{}}
}

// update adds id to (or removes it from) the index.
func (x *identIndex) update(id *identInfo, add bool) {
	if id.workload {
		identTerms(id, func(t string) { setMember(x.terms, t, id, add) })
	}
	for i, segs := range [2][]bool{id.segs, id.subjSegs} {
		for s, in := range segs {
			if in {
				setMember(x.segs[i], s, id, add)
			}
		}
	}
	setMember(x.cidr, id.cidr, id, add)
}

// matching calls f for the identities m may match (a superset: f checks).
func (x *identIndex) matching(m matcher, f func(*identInfo)) {
	for _, k := range indexKeys(m) {
		for id := range x.terms[k] {
			f(id)
		}
	}
}

// allocBuilder numbers identities, classes, groups, guards, peers and
// rules, reusing the numbers of a previous State for the same keys.
type allocBuilder struct {
	prev *allocState
	cur  *allocState
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

// allocState is the numbering a State carries. Numbers are never reused
// within a lineage of states, so a stale kernel element can never be
// mistaken for a new one.
type allocState struct {
	ids  *smap[string, uint32]
	next [numKinds]uint32
}

func newAllocBuilder(prev *State) *allocBuilder {
	a := &allocBuilder{cur: &allocState{ids: newSmap[string, uint32]()}}
	for k := range a.cur.next {
		a.cur.next[k] = 1
	}
	if prev != nil && prev.alloc != nil {
		a.prev = prev.alloc
		a.cur.next = prev.alloc.next
	}
	return a
}

func (a *allocBuilder) number(key string, kind allocKind) uint32 {
	if n, ok := a.cur.ids.get(key); ok {
		return n
	}
	var n uint32
	if a.prev != nil {
		n, _ = a.prev.ids.get(key)
	}
	if n == 0 {
		n = a.cur.next[kind]
		a.cur.next[kind]++
	}
	a.cur.ids.set(key, n)
	return n
}

func (a *allocBuilder) release(key string) { a.cur.ids.del(key) }

func (a *allocBuilder) freeze() *allocState {
	return &allocState{ids: a.cur.ids.freeze(), next: a.cur.next}
}
