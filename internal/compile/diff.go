package compile

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Delta is what the dataplane must write to go from one State to another.
// Apply order for a hitless update: new outcomes and rules, identities,
// tables, guards and ranges, then addresses; deletions in reverse.
type Delta struct {
	Addrs      []Change[netip.Addr, IdentityID]
	Identities []Change[IdentityID, IdentityAttrs]
	Tables     [2][]Change[TableKey, PortMap]
	Guards     []Change[[2]GuardID, Guard]
	// Ranges is the new outside address map when it changed (only on a
	// policy change; it is small), nil otherwise.
	Ranges []AddrRange
	// Outcomes are the outcome numbers whose outcome changed: made,
	// freed (no entry names it any more) or given to another outcome.
	Outcomes []Change[OutcomeID, Outcome]
	// Rules is the new rule table when it changed.
	Rules []policy.RuleRef
	// RuleChanges are the rule numbers whose rule changed, by number: an
	// empty RuleRef counts as no rule. Between States of one Compiler it
	// costs the rules the updates wrote, not the table.
	RuleChanges []Change[RuleNum, policy.RuleRef]
}

// Empty reports whether d changes nothing.
func (d *Delta) Empty() bool {
	return len(d.Addrs) == 0 && len(d.Identities) == 0 && len(d.Tables[0]) == 0 &&
		len(d.Tables[1]) == 0 && len(d.Guards) == 0 && d.Ranges == nil &&
		len(d.Outcomes) == 0 && d.Rules == nil
}

// Len counts the element changes of d.
func (d *Delta) Len() int {
	return len(d.Addrs) + len(d.Identities) + len(d.Tables[0]) + len(d.Tables[1]) +
		len(d.Guards) + len(d.Ranges) + len(d.Outcomes) + len(d.Rules)
}

// Diff returns the changes from old (nil: an empty state) to new. When
// new comes from old through a Compiler, it costs the shards the updates
// touched; between unrelated states it compares everything.
func Diff(old, new *State) Delta {
	if old == nil {
		old = &State{Outcomes: []Outcome{{}}} // nil maps: every element is an Add
	}
	var d Delta
	d.Addrs = diffSmap(old.Addrs, new.Addrs, func(a, b IdentityID) bool { return a == b })
	d.Identities = diffSmap(old.Identities, new.Identities, func(a, b IdentityAttrs) bool { return a == b })
	for i := range d.Tables {
		d.Tables[i] = diffSmap(old.Tables[i], new.Tables[i], portMapEqual)
	}
	d.Guards = diffSmap(old.Guards, new.Guards, func(a, b Guard) bool { return a == b })
	if !rangesEqual(old.Ranges, new.Ranges) {
		d.Ranges = new.Ranges
	}
	d.Outcomes = diffOutcomes(old.Outcomes, new.Outcomes)
	d.RuleChanges = diffRules(old, new)
	if len(d.RuleChanges) > 0 || len(old.Rules) != len(new.Rules) {
		d.Rules = new.Rules
	}
	return d
}

func rangesEqual(a, b []AddrRange) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) > 0 && &a[0] == &b[0] {
		return true
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// diffOutcomes compares two outcome tables slot by slot (a few hundred
// at full scale); a zero Outcome is no outcome.
func diffOutcomes(a, b []Outcome) []Change[OutcomeID, Outcome] {
	if len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0]) {
		return nil
	}
	at := func(s []Outcome, i int) Outcome {
		if i < len(s) {
			return s[i]
		}
		return Outcome{}
	}
	var out []Change[OutcomeID, Outcome]
	for i := 1; i < max(len(a), len(b)); i++ {
		x, y := at(a, i), at(b, i)
		switch {
		case x == y:
		case x == (Outcome{}):
			out = append(out, Change[OutcomeID, Outcome]{Op: Add, Key: OutcomeID(i), New: y})
		case y == (Outcome{}):
			out = append(out, Change[OutcomeID, Outcome]{Op: Delete, Key: OutcomeID(i), Old: x})
		default:
			out = append(out, Change[OutcomeID, Outcome]{Op: Update, Key: OutcomeID(i), Old: x, New: y})
		}
	}
	return out
}

// ruleEdits is one step of a Compiler's rule table: the slots it wrote
// since the State before. A State keeps its step, which links back a
// bounded number of steps, so that Diff finds the slots two States of one
// lineage may differ in without comparing the table.
type ruleEdits struct {
	prev  *ruleEdits
	depth int
	slots []RuleNum
}

// maxRuleSteps bounds the steps a State keeps (and Diff walks): States
// further apart compare their tables in full.
const maxRuleSteps = 64

// logRules closes the step of the rule slots written since the last
// State; a State without writes shares its step with the one before.
func (pr *program) logRules() *ruleEdits {
	if pr.ruleLog != nil && len(pr.ruleEdits) == 0 {
		return pr.ruleLog
	}
	e := &ruleEdits{prev: pr.ruleLog, slots: pr.ruleEdits}
	if e.prev != nil {
		e.depth = e.prev.depth + 1
	}
	if e.depth >= maxRuleSteps {
		e.prev, e.depth = nil, 0
	}
	if e.prev == nil {
		e.slots = nil // nothing leads back past a first step: its slots are never asked for
	}
	pr.ruleLog, pr.ruleEdits = e, nil
	return e
}

// editedSlots returns the slots written between steps a and b of one
// lineage (either may be the later one), or ok false when neither leads
// back to the other.
func editedSlots(a, b *ruleEdits) (slots []RuleNum, ok bool) {
	if a == nil || b == nil {
		return nil, false
	}
	walk := func(from, to *ruleEdits) ([]RuleNum, bool) {
		e := from
		for e != nil && e != to {
			e = e.prev
		}
		if e == nil {
			return nil, false
		}
		var out []RuleNum
		for e := from; e != to; e = e.prev {
			out = append(out, e.slots...)
		}
		return out, true
	}
	if s, ok := walk(b, a); ok {
		return s, true
	}
	return walk(a, b)
}

// diffRules lists the rule numbers whose rule differs from old to new:
// the slots written in between when the two are of one lineage (plus the
// tail of the longer table), every slot otherwise.
func diffRules(old, new *State) []Change[RuleNum, policy.RuleRef] {
	a, b := old.Rules, new.Rules
	at := func(r []policy.RuleRef, n int) policy.RuleRef {
		if n < len(r) {
			return r[n]
		}
		return policy.RuleRef{}
	}
	var out []Change[RuleNum, policy.RuleRef]
	check := func(n int) {
		x, y := at(a, n), at(b, n)
		switch {
		case x == y:
		case x == (policy.RuleRef{}):
			out = append(out, Change[RuleNum, policy.RuleRef]{Op: Add, Key: RuleNum(n), New: y})
		case y == (policy.RuleRef{}):
			out = append(out, Change[RuleNum, policy.RuleRef]{Op: Delete, Key: RuleNum(n), Old: x})
		default:
			out = append(out, Change[RuleNum, policy.RuleRef]{Op: Update, Key: RuleNum(n), Old: x, New: y})
		}
	}
	short, long := min(len(a), len(b)), max(len(a), len(b))
	if slots, ok := editedSlots(old.rulesLog, new.rulesLog); ok {
		seen := map[RuleNum]bool{}
		for _, n := range slots {
			if int(n) > 0 && int(n) < short && !seen[n] {
				seen[n] = true
				check(int(n))
			}
		}
		slices.SortFunc(out, func(x, y Change[RuleNum, policy.RuleRef]) int { return cmp.Compare(x.Key, y.Key) })
	} else if !(short > 0 && &a[0] == &b[0]) {
		for n := 1; n < short; n++ {
			check(n)
		}
	}
	for n := max(short, 1); n < long; n++ {
		check(n)
	}
	return out
}
