package compile

import (
	"maps"
	"slices"

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

// term is one condition an identity has: its namespace ('n', k), a label
// ('l', k, v) or a label of its namespace ('m', k, v); ('*') is had by all.
type term struct {
	kind byte
	k, v string
}

// selIndex is an inverted index from one term of each matcher to the
// matcher, so that finding the matchers of an identity costs its labels
// plus the candidates, not the number of matchers.
type selIndex struct {
	byKey   map[term][]int32
	entries map[int32]matcher
}

func (x *selIndex) add(id int32, m matcher) {
	if x.byKey == nil {
		x.byKey, x.entries = map[term][]int32{}, map[int32]matcher{}
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
func indexKeys(m matcher) []term {
	if m.sel != nil && len(m.sel.MatchLabels) > 0 {
		k := slices.Min(slices.Collect(maps.Keys(m.sel.MatchLabels)))
		return []term{{'l', k, m.sel.MatchLabels[k]}}
	}
	if m.sel != nil {
		// A match has the key of an In requirement with one of its
		// values: one term per value (an identity has at most one).
		for _, r := range m.sel.MatchExpressions {
			if r.Operator == "In" && len(r.Values) > 0 {
				vals := slices.Compact(slices.Sorted(slices.Values(r.Values)))
				out := make([]term, 0, len(vals))
				for _, v := range vals {
					out = append(out, term{'l', r.Key, v})
				}
				return out
			}
		}
	}
	if m.nsOnly != "" {
		return []term{{kind: 'n', k: m.nsOnly}}
	}
	if m.nsm.Selector == nil && len(m.nsm.Names) > 0 {
		names := slices.Compact(slices.Sorted(slices.Values(m.nsm.Names)))
		out := make([]term, 0, len(names))
		for _, n := range names {
			out = append(out, term{kind: 'n', k: n})
		}
		return out
	}
	if s := m.nsm.Selector; s != nil && len(m.nsm.Names) == 0 && len(s.MatchLabels) > 0 {
		k := slices.Min(slices.Collect(maps.Keys(s.MatchLabels)))
		return []term{{'m', k, s.MatchLabels[k]}}
	}
	return []term{{kind: '*'}}
}

// query calls f for every matcher that matches id.
func (x *selIndex) query(id *identInfo, f func(int32)) {
	if x.byKey == nil || !id.workload {
		return
	}
	identTerms(id, func(t term) {
		for _, e := range x.byKey[t] {
			m := x.entries[e]
			if m.matches(id) {
				f(e)
			}
		}
	})
}

// identTerms lists the terms a workload identity has: every matcher that
// matches it is indexed under one of them.
func identTerms(id *identInfo, f func(term)) {
	f(term{kind: '*'})
	f(term{kind: 'n', k: id.ns})
	for k, v := range id.labels {
		f(term{'l', k, v})
	}
	for k, v := range id.nsObj.Labels {
		f(term{'m', k, v})
	}
}

// identIndex is the other way round: from a term, segment or CIDR class
// to the identities that have it, so that a policy change finds the
// identities a subject or a peer may match without looking at all.
type identIndex struct {
	terms map[term]*memberSet[*identInfo]   // all but '*': see matching
	wls   map[*identInfo]struct{}           // every workload identity: the '*' term
	segs  [2]map[int]*memberSet[*identInfo] // by address (peers), by first address (subjects)
	cidr  map[int32]*memberSet[*identInfo]
}

func newIdentIndex() identIndex {
	return identIndex{terms: map[term]*memberSet[*identInfo]{}, wls: map[*identInfo]struct{}{},
		segs: [2]map[int]*memberSet[*identInfo]{{}, {}}, cidr: map[int32]*memberSet[*identInfo]{}}
}

// update adds id to (or removes it from) the index.
func (x *identIndex) update(id *identInfo, add bool) {
	if id.workload {
		if add {
			x.wls[id] = struct{}{}
		} else {
			delete(x.wls, id)
		}
		identTerms(id, func(t term) {
			if t.kind != '*' {
				setMember(x.terms, t, id, add)
			}
		})
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

// matching calls f for the identities m may match: a superset, which
// costs only time (an identity looked at again keeps what it has). A
// matcher without a selective term may match every workload identity,
// never an outside one.
func (x *identIndex) matching(m matcher, f func(*identInfo)) {
	for _, k := range indexKeys(m) {
		if k.kind == '*' {
			for id := range x.wls {
				f(id)
			}
			continue
		}
		for id := range x.terms[k].all() {
			f(id)
		}
	}
}
