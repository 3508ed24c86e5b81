package compile

import (
	"net/netip"

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
	// Outcomes are the outcomes new in the later state (ids from
	// FirstOutcome on); outcomes are never renumbered within a lineage.
	Outcomes     []Outcome
	FirstOutcome OutcomeID
	// Rules is the new rule table when it changed.
	Rules []policy.RuleRef
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
	n := len(old.Outcomes)
	if n > len(new.Outcomes) || !outcomesPrefix(old.Outcomes, new.Outcomes) {
		n = 1 // not of one lineage: send them all
	}
	d.FirstOutcome, d.Outcomes = OutcomeID(n), new.Outcomes[n:]
	if !rulesEqual(old.Rules, new.Rules) {
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

func outcomesPrefix(a, b []Outcome) bool {
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

func rulesEqual(a, b []policy.RuleRef) bool {
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
