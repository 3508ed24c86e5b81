package nft

import (
	"slices"

	"github.com/google/nftables"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// outcomeElems brings the outcome elements in line with s: outcomes
// made, freed or given to another outcome (the compiler reuses the
// numbers of outcomes no entry names any more), and those whose rendering
// may have changed because they name a changed rule (its id or log flag):
// the verdict, the chain of an outcome that logs, the rule it counts
// into. It keeps one rule counter element per rule that some outcome
// names (and the zero key): new ones before the switch, gone ones in it.
// Rules that decide nothing on this host cost nothing. With full, every
// outcome is looked at; otherwise s is of the model's lineage and the
// cost follows the changed outcomes and rules.
func (m *model) outcomeElems(t *tx, s *compile.State, outs []compile.Change[compile.OutcomeID, compile.Outcome],
	rules []compile.Change[compile.RuleNum, policy.RuleRef], full bool) {
	var ids []int
	if full {
		m.byRule = nil
		for i := 1; i < max(len(s.Outcomes), len(m.outcomes)); i++ {
			ids = append(ids, i)
			if i < len(s.Outcomes) {
				m.indexOutcome(s.Outcomes[i], i, 1)
			}
		}
	} else {
		for _, c := range outs {
			ids = append(ids, int(c.Key))
			m.indexOutcome(c.Old, int(c.Key), -1)
			m.indexOutcome(c.New, int(c.Key), 1)
		}
		for _, c := range rules {
			if int(c.Key) < len(m.byRule) {
				for _, o := range m.byRule[c.Key] {
					ids = append(ids, int(o))
				}
			}
		}
		slices.Sort(ids)
		ids = slices.Compact(ids)
	}
	touched := map[string]string{} // rule key → rule id
	for _, i := range ids {
		was, now, id := m.writeOutcome(t, s, i)
		if was == now {
			continue
		}
		if was != "" {
			if m.ruleRefs[was]--; m.ruleRefs[was] <= 0 {
				delete(m.ruleRefs, was)
			}
			if _, ok := touched[was]; !ok {
				touched[was] = m.ruleOf[was]
			}
		}
		if now != "" {
			m.ruleRefs[now]++
			touched[now] = id
		}
	}
	if full {
		m.recount(s)
		touched = map[string]string{}
		for k, id := range m.ruleOf {
			touched[k] = id
		}
		for i := 1; i < len(s.Outcomes); i++ {
			if k := m.outRule[i]; k != "" {
				touched[k] = ruleID(s.Rules, s.Outcomes[i].Rule)
			}
		}
	}
	m.counterElems(t, touched)
}

// writeOutcome writes outcome i of s (none: a zero Outcome, or past the
// end) where it differs from the model's, and returns the rule key it
// counted into and counts into now ("" for none), with the rule's id.
// A new outcome goes into the preparatory transaction (nothing in force
// names its number: the compiler frees a number only once no entry names
// it, and the model deleted its elements then); a changed or freed one
// is rewritten in the switch.
func (m *model) writeOutcome(t *tx, s *compile.State, i int) (was, now, rid string) {
	for len(m.outcomes) <= i {
		m.outcomes, m.outRule = append(m.outcomes, ""), append(m.outRule, "")
	}
	id := compile.OutcomeID(i)
	key, name := u32(uint32(id)), m.b.n(outcomeChain(id))
	was = m.outRule[i]
	var o compile.Outcome
	if i < len(s.Outcomes) {
		o = s.Outcomes[i]
	}
	if o == (compile.Outcome{}) {
		if m.outcomes[i] != "" {
			// Its elements (and chain) stay until the next Apply: see sweep.
			m.lingering[i] = lingerOut{at: m.applies, sig: m.outcomes[i], rule: m.outRule[i]}
		}
		m.outcomes[i], m.outRule[i] = "", ""
		return was, "", ""
	}
	word, chain, sig := m.b.outcome(id, o, s.Rules)
	if uint32(id) >= wordLogs && m.err == nil {
		m.err = errorf("outcome %d beyond the dataplane's %d", id, wordLogs-1)
	}
	rid = ruleID(s.Rules, o.Rule)
	rk := m.keyFor(rid)
	if l, ok := m.lingering[i]; ok {
		// Still in the kernel with what it rendered before: rewritten in
		// the switch where that differs, as a changed outcome is.
		delete(m.lingering, i)
		m.outcomes[i], m.outRule[i] = l.sig, l.rule
	}
	switch {
	case chain != nil && !m.outChain[id]:
		t.pre.chains = append(t.pre.chains, name)
		t.pre.addRules(name, false, chain)
		t.pre.add(m.b.n(setVerdicts), m.b.logVerdict(id))
		m.outChain[id] = true
	case chain != nil && m.outcomes[i] != sig:
		t.addRules(name, true, chain)
	}
	// An outcome that stops logging keeps its chain and verdicts element
	// while its number lives: a packet that read its word before the
	// switch may look the word up after it. They go with the number (see
	// sweep).
	if m.outcomes[i] == "" {
		t.pre.add(m.b.n(setOutcomes), nftables.SetElement{Key: key, Val: u32(word)})
		t.pre.add(m.b.n(setOutRule), nftables.SetElement{Key: key, Val: []byte(rk)})
		m.outcomes[i], m.outRule[i] = sig, rk
		return was, rk, rid
	}
	if m.outcomes[i] != sig {
		t.del(m.b.n(setOutcomes), nftables.SetElement{Key: key})
		t.add(m.b.n(setOutcomes), nftables.SetElement{Key: key, Val: u32(word)})
		m.outcomes[i] = sig
	}
	if m.outRule[i] != rk {
		t.del(m.b.n(setOutRule), nftables.SetElement{Key: key})
		t.add(m.b.n(setOutRule), nftables.SetElement{Key: key, Val: []byte(rk)})
		m.outRule[i] = rk
	}
	return was, rk, rid
}

// sweep deletes, in the switch t, what the Apply before stopped using:
// outcomes and identities it freed (their elements, and chains) and rule
// counter elements no outcome named since. Not in the Apply that stops using
// them: the kernel reads a set's elements at the moment of each lookup,
// not as of the generation a packet's walk started in, so a packet still
// on its way when the switch commits (a vCPU that the hypervisor stops in
// the middle of it, say) may have read an outcome number, or an outcome's
// rule key, before the switch and look it up after: missing, the lookup
// fails, the packet falls through to the next level and, at the end, to a
// deny, though both States allow it. What the next State names again is
// kept (an outcome number taken again is rewritten in its switch).
func (m *model) sweep(t *tx) {
	for i, l := range m.lingering {
		if l.at >= m.applies {
			continue
		}
		id := compile.OutcomeID(i)
		key := u32(uint32(id))
		t.del(m.b.n(setOutcomes), nftables.SetElement{Key: key})
		t.del(m.b.n(setOutRule), nftables.SetElement{Key: key})
		if m.outChain[id] {
			// Nothing goes to it after this switch: the element that did
			// is deleted in the same transaction, first.
			name := m.b.n(outcomeChain(id))
			t.del(m.b.n(setVerdicts), m.b.logVerdict(id))
			t.sweepRules = append(t.sweepRules, name)
			t.delChains = append(t.delChains, name)
			delete(m.outChain, id)
		}
		delete(m.lingering, i)
	}
	m.sweepIdentities(t)
	m.sweepCounters(t)
}

// keyFor returns the counter key of rule id: the one it holds, else the
// first of its probe keys (probeKey) that no other rule holds. A key in
// the kernel whose owner is not known (a counter element without a
// comment, from an older version) is taken only as the home key, as
// before. So two rules never count into one element, and an adopted
// table keeps every rule's key.
func (m *model) keyFor(id string) string {
	if id == "" {
		return string(ruleKey(""))
	}
	tag := ownerTag(id)
	if k, ok := m.keyOf[tag]; ok {
		return k
	}
	for n := uint32(0); ; n++ {
		k := string(probeKey(id, n))
		if owner, ok := m.claim[k]; ok {
			if owner == tag {
				m.keyOf[tag] = k
				return k
			}
			continue
		}
		_, inUse := m.ruleOf[k]
		_, retired := m.retired[k]
		if n == 0 || (!inUse && !retired) {
			m.claim[k], m.keyOf[tag] = tag, k
			return k
		}
	}
}

// release gives key k up: its element is gone, or was never written.
func (m *model) release(k string) {
	if tag, ok := m.claim[k]; ok {
		delete(m.claim, k)
		if m.keyOf[tag] == k {
			delete(m.keyOf, tag)
		}
	}
}

// adoptRuleCounters takes in the rule counter elements of a table
// found: their keys, and the rules their comments name.
func (m *model) adoptRuleCounters(els []nftables.SetElement) {
	for _, e := range els {
		k := string(e.Key)
		m.ruleOf[k] = ""
		if e.Comment != "" {
			m.claim[k], m.keyOf[e.Comment] = e.Comment, k
		}
	}
}

// recount counts anew the outcomes of s that count into each rule key.
func (m *model) recount(s *compile.State) {
	m.ruleRefs = map[string]int{}
	for i := 1; i < len(s.Outcomes) && i < len(m.outRule); i++ {
		if k := m.outRule[i]; k != "" {
			m.ruleRefs[k]++
		}
	}
}

// counterElems brings the rule counter elements of the touched keys in
// line with the outcomes counting into them: the zero key always stays.
func (m *model) counterElems(t *tx, touched map[string]string) {
	zero := string(ruleKey(""))
	touched[zero] = ""
	for k, id := range touched {
		live := m.ruleRefs[k] > 0 || k == zero
		_, had := m.ruleOf[k]
		switch {
		case live && !had:
			if _, ok := m.retired[k]; ok {
				delete(m.retired, k) // still in the kernel
			} else {
				t.pre.add(setRuleCounters, nftables.SetElement{Key: []byte(k), Comment: ownerComment(id)})
			}
			m.ruleOf[k] = id
		case live:
			m.ruleOf[k] = id
		case had:
			m.retired[k] = m.applies
			delete(m.ruleOf, k)
		default:
			if _, ok := m.retired[k]; !ok {
				m.release(k) // claimed in this Apply, never written
			}
		}
	}
}

// ownerComment is the comment of a rule's counter element.
func ownerComment(id string) string {
	if id == "" {
		return ""
	}
	return ownerTag(id)
}

// sweepCounters deletes, in the switch t, the rule counter elements that
// no outcome has named since an earlier Apply (see sweep; a counter the
// next State names again is simply kept), and ends the model's Apply.
func (m *model) sweepCounters(t *tx) {
	for k, at := range m.retired {
		if at < m.applies {
			t.del(setRuleCounters, nftables.SetElement{Key: []byte(k)})
			delete(m.retired, k)
			m.release(k)
		}
	}
	m.applies++
}

// indexOutcome notes (delta 1) or forgets (-1) that outcome id names
// its rule numbers.
func (m *model) indexOutcome(o compile.Outcome, id int, delta int) {
	note := func(n compile.RuleNum) {
		if n == 0 {
			return
		}
		for int(n) >= len(m.byRule) {
			m.byRule = append(m.byRule, nil)
		}
		if delta > 0 {
			m.byRule[n] = append(m.byRule[n], compile.OutcomeID(id))
		} else if k := slices.Index(m.byRule[n], compile.OutcomeID(id)); k >= 0 {
			m.byRule[n] = slices.Delete(m.byRule[n], k, k+1)
		}
	}
	note(o.Rule)
	if o.WouldDeny != o.Rule {
		note(o.WouldDeny)
	}
}

func ruleID(rules []policy.RuleRef, n compile.RuleNum) string {
	if n == 0 || int(n) >= len(rules) {
		return ""
	}
	return rules[n].ID
}
