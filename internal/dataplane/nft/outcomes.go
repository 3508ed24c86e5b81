package nft

import (
	"slices"

	"github.com/google/nftables"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// outcomeElems writes the outcomes new in s and rewrites those whose
// rendering may have changed (they name a changed rule: its id or log
// flag): the verdict, the chain of an outcome that logs, the rule it
// counts into. It keeps one rule counter element per rule that some
// outcome names (and the zero key): new ones before the switch, gone ones
// after. Rules that decide nothing on this host cost nothing. With full,
// every outcome is looked at; otherwise s is of the model's lineage and
// the cost follows the new outcomes and the changed rules.
func (m *model) outcomeElems(t *tx, s *compile.State, rules []compile.Change[compile.RuleNum, policy.RuleRef], full bool) {
	n0 := len(m.outcomes)
	var ids []int
	if full {
		ids = make([]int, 0, len(s.Outcomes))
		for i := 1; i < len(s.Outcomes); i++ {
			ids = append(ids, i)
		}
	} else {
		for _, c := range rules {
			if int(c.Key) < len(m.byRule) {
				for _, o := range m.byRule[c.Key] {
					ids = append(ids, int(o))
				}
			}
		}
		slices.Sort(ids)
		ids = slices.Compact(ids)
		for i := n0; i < len(s.Outcomes); i++ {
			ids = append(ids, i)
		}
	}
	touched := map[string]string{} // rule key → rule id
	for _, i := range ids {
		was, now, id := m.writeOutcome(t, s, i)
		if was != nil && *was == now {
			continue
		}
		if was != nil {
			m.ruleRefs[*was]--
			if _, ok := touched[*was]; !ok {
				touched[*was] = m.ruleOf[*was]
			}
		}
		m.ruleRefs[now]++
		touched[now] = id
	}
	if full {
		m.recount(s)
		touched = map[string]string{}
		for k, id := range m.ruleOf {
			touched[k] = id
		}
		for i := 1; i < len(s.Outcomes); i++ {
			touched[m.outRule[i]] = ruleID(s.Rules, s.Outcomes[i].Rule)
		}
	}
	m.counterElems(t, touched)
	m.indexOutcomes(s, n0, full)
}

// writeOutcome writes outcome i of s where its rendering differs from
// the model's, and returns the rule key it counted into (nil for an
// outcome new to the model) and counts into now, with the rule's id.
func (m *model) writeOutcome(t *tx, s *compile.State, i int) (was *string, now, rid string) {
	id := compile.OutcomeID(i)
	o := s.Outcomes[i]
	v, chain, sig := m.b.outcome(id, o, s.Rules)
	rid = ruleID(s.Rules, o.Rule)
	key, rk := u32(uint32(id)), string(ruleKey(rid))
	name := m.b.n(outcomeChain(id))
	if chain != nil && !m.outChain[id] {
		t.pre.chains = append(t.pre.chains, name)
		t.pre.addRules(name, false, chain)
		m.outChain[id] = true
	} else if chain != nil && (i >= len(m.outcomes) || m.outcomes[i] != sig) {
		t.addRules(name, true, chain)
	}
	if i >= len(m.outcomes) {
		t.pre.add(m.b.n(setOutcomes), nftables.SetElement{Key: key, VerdictData: v})
		t.pre.add(m.b.n(setOutRule), nftables.SetElement{Key: key, Val: []byte(rk)})
		m.outcomes, m.outRule = append(m.outcomes, sig), append(m.outRule, rk)
		return nil, rk, rid
	}
	if m.outcomes[i] != sig {
		t.del(m.b.n(setOutcomes), nftables.SetElement{Key: key})
		t.add(m.b.n(setOutcomes), nftables.SetElement{Key: key, VerdictData: v})
		m.outcomes[i] = sig
	}
	old := m.outRule[i]
	if old != rk {
		t.del(m.b.n(setOutRule), nftables.SetElement{Key: key})
		t.add(m.b.n(setOutRule), nftables.SetElement{Key: key, Val: []byte(rk)})
		m.outRule[i] = rk
	}
	return &old, rk, rid
}

// recount counts anew the outcomes of s that count into each rule key.
func (m *model) recount(s *compile.State) {
	m.ruleRefs = map[string]int{}
	for i := 1; i < len(s.Outcomes) && i < len(m.outRule); i++ {
		m.ruleRefs[m.outRule[i]]++
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
			t.pre.add(setRuleCounters, nftables.SetElement{Key: []byte(k)})
			m.ruleOf[k] = id
		case live:
			m.ruleOf[k] = id
		case had:
			t.del(setRuleCounters, nftables.SetElement{Key: []byte(k)})
			delete(m.ruleOf, k)
		}
	}
}

// indexOutcomes notes which outcomes name which rule numbers: the new
// ones from n0 on, or all of s's with full.
func (m *model) indexOutcomes(s *compile.State, n0 int, full bool) {
	if full {
		m.byRule, n0 = nil, 1
	}
	note := func(n compile.RuleNum, id int) {
		if n == 0 {
			return
		}
		for int(n) >= len(m.byRule) {
			m.byRule = append(m.byRule, nil)
		}
		m.byRule[n] = append(m.byRule[n], compile.OutcomeID(id))
	}
	for i := n0; i < len(s.Outcomes); i++ {
		note(s.Outcomes[i].Rule, i)
		if w := s.Outcomes[i].WouldDeny; w != s.Outcomes[i].Rule {
			note(w, i)
		}
	}
}

func ruleID(rules []policy.RuleRef, n compile.RuleNum) string {
	if n == 0 || int(n) >= len(rules) {
		return ""
	}
	return rules[n].ID
}
