// Package compile turns an inventory and a policy set into the desired
// dataplane state of one host: identities, address→identity maps and
// verdict tables that the kernel consults with a constant number of map
// lookups per packet, whatever the number of rules. It is pure: no I/O.
//
// The design and its reasons are in docs/compile.md. In short: a packet's
// source and destination addresses map to identities; an identity maps to
// a peer class per level and direction (which rule peers it matches) and,
// when it lives on this host, to a policy group per direction (which
// policies apply to it); a side's verdict is one lookup per level in a
// table keyed by (level, class, group, protocol bucket) holding port
// intervals, then a wildcard table keyed by group alone.
package compile

import (
	"net/netip"
	"sort"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Numeric ids the dataplane uses. Zero means "none" in every id space.
type (
	IdentityID uint32
	ClassID    uint32
	GroupID    uint32
	OutcomeID  uint32
	RuleNum    uint32
	GuardID    uint32
)

// NumLevels is the number of peer-class levels, finest first. A rule peer
// belongs to one level: 0 workload selectors (and, for egress, named ports
// of the destination), 1 whole namespaces, 2 segments and CIDRs. Coarse
// peers get coarse classes, so that a rule from a big segment costs one
// entry per segment class, not one per workload class.
const NumLevels = 3

// wildcardLevel marks the table entries that hold a group's verdict for a
// peer matching none of its specific peers.
const wildcardLevel = NumLevels

// IdentityAttrs is what the dataplane stores per identity.
type IdentityAttrs struct {
	Workload bool // false for an address outside the inventory
	Local    bool // has a workload on this host: Group is set
	Class    [2][NumLevels]ClassID
	Group    [2]GroupID // 0: no policy applies (the side allows)
	Guard    GuardID    // membership in the segments walls and conflict classes name
}

// TableKey keys a verdict table of one direction.
type TableKey struct {
	Level  uint8
	Bucket uint8 // protocol bucket, see State.Buckets
	Class  ClassID
	Group  GroupID
}

// PortRange maps the ports Lo..Hi (for ICMP type<<8|code) to an outcome.
type PortRange struct {
	Lo, Hi  uint16
	Outcome OutcomeID
}

// PortMap is a sorted list of disjoint port ranges. Inside a level's entry
// a port without a range falls through to the next level.
type PortMap []PortRange

func (m PortMap) find(port int) (OutcomeID, bool) {
	i := sort.Search(len(m), func(i int) bool { return int(m[i].Hi) >= port })
	if i < len(m) && int(m[i].Lo) <= port {
		return m[i].Outcome, true
	}
	return 0, false
}

func portMapEqual(a, b PortMap) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true // a shard's clone shares its values
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Outcome is the verdict of one side: the action, the rule that decided
// (0 when the side fell through every tier) and the observe-mode rule that
// would have denied.
type Outcome struct {
	Action    policy.Action
	Rule      RuleNum
	WouldDeny RuleNum
}

// Guard is the verdict of the wall table for a (source, destination) pair
// of guard classes: indexes + 1 into Set.Walls and Set.ConflictClasses.
type Guard struct {
	Wall     int32
	Conflict int32
}

// AddrRange maps the outside addresses Lo..Hi to an identity.
type AddrRange struct {
	Lo, Hi netip.Addr
	ID     IdentityID
}

// State is the desired dataplane state of one host. It is immutable: a
// Compiler hands out a new State for every change and shares what did not
// change with the previous one. Diff(nil, s) lists every element, for a
// first load; Diff(old, s) the changes.
type State struct {
	Host       string
	Addrs      *smap[netip.Addr, IdentityID] // workload addresses
	Ranges     []AddrRange                   // every other address, sorted, covering v4 and v6
	Identities *smap[IdentityID, IdentityAttrs]
	Tables     [2]*smap[TableKey, PortMap] // by policy.Direction
	Guards     *smap[[2]GuardID, Guard]    // (source guard, destination guard)
	// Buckets maps an IP protocol number to its bucket: 0 for every
	// protocol that no service names.
	Buckets  [256]uint8
	Outcomes []Outcome        // by OutcomeID; 0 unused, a zero Outcome is a free number
	Rules    []policy.RuleRef // by RuleNum; 0 unused
	Walls    []*policy.Wall
	Conflict []*policy.ConflictClass

	alloc    *allocState    // for stable numbering across compiles
	outFree  *pool[Outcome] // free outcome numbers
	tag      *stateTag      // its place in its lineage, for SafeSwitch
	rulesLog *ruleEdits     // how Rules came about, for a cheap Diff
}

// EachIdentity calls f for every identity of s, in no particular order.
func (s *State) EachIdentity(f func(IdentityID, IdentityAttrs)) { s.Identities.each(f) }

// Identity returns the identity of an address, as the dataplane finds it:
// a workload address first, then the outside ranges.
func (s *State) Identity(a netip.Addr) IdentityID {
	a = a.Unmap()
	if id, ok := s.Addrs.get(a); ok {
		return id
	}
	i := sort.Search(len(s.Ranges), func(i int) bool { return s.Ranges[i].Hi.Compare(a) >= 0 })
	if i < len(s.Ranges) && s.Ranges[i].Lo.Compare(a) <= 0 {
		return s.Ranges[i].ID
	}
	return 0
}

// Lookup judges a probe from the state's tables alone, with the lookups
// the kernel makes: address → identity, identity → attributes, the guard
// table, then per side one lookup per level and the wildcard. A side whose
// workload is on another host is left to that host: it allows here, with
// Reason "remote".
func Lookup(s *State, p policy.Probe) policy.Verdict {
	src, _ := s.Identities.get(s.Identity(p.From.Addr))
	dst, _ := s.Identities.get(s.Identity(p.To.Addr))
	bucket := s.Buckets[uint8(p.Protocol)]
	var v policy.Verdict
	v.Egress = s.side(policy.Egress, src, dst, bucket, p.Port)
	v.Ingress = s.side(policy.Ingress, dst, src, bucket, p.Port)
	v.Action = policy.Combine(v.Egress.Action, v.Ingress.Action)
	g, _ := s.Guards.get([2]GuardID{src.Guard, dst.Guard})
	if g.Wall > 0 {
		v.Wall, v.Action = s.Walls[g.Wall-1], policy.Deny
		return v
	}
	if v.Action == policy.Allow && g.Conflict > 0 {
		v.ConflictClass, v.Action = s.Conflict[g.Conflict-1], policy.Escalate
	}
	return v
}

func (s *State) side(d policy.Direction, local, peer IdentityAttrs, bucket uint8, port int) policy.Side {
	switch {
	case !local.Workload:
		return policy.Side{Action: policy.Allow, Reason: "outside the inventory"}
	case !local.Local:
		return policy.Side{Action: policy.Allow, Reason: "remote"}
	case local.Group[d] == 0:
		return policy.Side{Action: policy.Allow, Reason: "no policy"}
	}
	if port < 0 || port > 0xffff {
		port = 0
	}
	id, ok := OutcomeID(0), false
	for lv := 0; lv < NumLevels && !ok; lv++ {
		k := TableKey{Level: uint8(lv), Bucket: bucket, Class: peer.Class[d][lv], Group: local.Group[d]}
		if m, found := s.Tables[d].get(k); found {
			id, ok = m.find(port)
		}
	}
	if !ok {
		m, _ := s.Tables[d].get(TableKey{Level: wildcardLevel, Bucket: bucket, Group: local.Group[d]})
		id, _ = m.find(port)
	}
	return s.sideOf(id)
}

func (s *State) sideOf(id OutcomeID) policy.Side {
	if id == 0 || int(id) >= len(s.Outcomes) || s.Outcomes[id] == (Outcome{}) {
		// Fail closed: a missing entry is a compiler bug, never an allow.
		return policy.Side{Action: policy.Deny, Reason: "no table entry"}
	}
	o := s.Outcomes[id]
	side := policy.Side{Action: o.Action}
	if o.Rule != 0 {
		r := s.Rules[o.Rule]
		side.Rule = &r
	}
	if o.WouldDeny != 0 {
		r := s.Rules[o.WouldDeny]
		side.WouldDeny = &r
	}
	return side
}

// Stats counts the state's elements.
type Stats struct {
	Addrs, Ranges, Identities int
	Entries                   [2]int // table keys per direction
	PortRanges                [2]int // port ranges in those entries (nft elements)
	Wildcard                  [2]int // of Entries, wildcard keys
	ByLevel                   [2][NumLevels + 1]int
	Guards, Outcomes, Rules   int
}

// Stats counts the elements of s; it scans everything (for reports).
func (s *State) Stats() Stats {
	st := Stats{Addrs: s.Addrs.len(), Ranges: len(s.Ranges), Identities: s.Identities.len(),
		Guards: s.Guards.len(), Outcomes: len(s.Outcomes) - 1, Rules: len(s.Rules) - 1}
	for d := range s.Tables {
		s.Tables[d].each(func(k TableKey, m PortMap) {
			st.Entries[d]++
			st.PortRanges[d] += len(m)
			st.ByLevel[d][k.Level]++
			if k.Level == wildcardLevel {
				st.Wildcard[d]++
			}
		})
	}
	return st
}
