package nft

import (
	"github.com/google/nftables"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Named attributes. An identity's attribute element (guard, cls_i0 …
// cls_e2) is written only when some key of the state names its value: a
// class word that a verdict-table key of that direction and level holds,
// a guard that a guards key holds. A missing element stops the rule that
// looks it up, exactly as the missing table (or guards) entry that its
// value would have found: the level's rule stops and the next level is
// tried, the guard rule stops and no wall applies. So leaving it out
// changes no verdict, and most identities need few of their seven: at
// 100,000 /32 ipBlock rules, 101,002 identities need 100,001 attribute
// elements instead of 707,014.
//
// The model keeps which elements are in the kernel (attrIn), how many
// keys name each value (named) and how many held identities (in the state
// or lingering) have a value whose element is not written (unwritten).
// When a value that such identities hold becomes named, the Apply finds
// them in the state and writes their elements in the same transaction as
// the keys that name it. A value that stops being named keeps its
// elements (they find nothing, and cost no operation) until the identity
// changes or goes.
type attrIndex struct {
	in        []uint8 // by identity: bit i set when attribute i's element is in the kernel
	named     [numAttrs]map[uint32]int
	unwritten [numAttrs]map[uint32]int
}

func newAttrIndex() *attrIndex {
	x := &attrIndex{}
	for i := range numAttrs {
		x.named[i], x.unwritten[i] = map[uint32]int{}, map[uint32]int{}
	}
	return x
}

func (x *attrIndex) has(id compile.IdentityID, i int) bool {
	return int(id) < len(x.in) && x.in[id]&(1<<i) != 0
}

func (x *attrIndex) mark(id compile.IdentityID, i int, on bool) {
	if int(id) >= len(x.in) {
		if !on {
			return
		}
		x.in = append(x.in, make([]uint8, int(id)+1-len(x.in)+len(x.in)/4)...)
	}
	if on {
		x.in[id] |= 1 << i
	} else {
		x.in[id] &^= 1 << i
	}
}

// attrOf returns the attribute index and value a table key names (ok
// false for the wildcard level, which looks no class up).
func attrOf(d policy.Direction, k compile.TableKey) (int, uint32, bool) {
	if int(k.Level) >= compile.NumLevels {
		return 0, 0, false
	}
	return 1 + int(d)*compile.NumLevels + int(k.Level), classWord(k.Class, int(k.Level)), true
}

// nameValues counts the keys that the delta adds and deletes and returns,
// by attribute, the values that became named while some identity holds
// them unwritten.
func (x *attrIndex) nameValues(tables [2][]compile.Change[compile.TableKey, compile.PortMap],
	guards []compile.Change[[2]compile.GuardID, compile.Guard]) (wake [numAttrs]map[uint32]bool, any bool) {
	count := func(i int, v uint32, op compile.Op) {
		switch op {
		case compile.Add:
			x.named[i][v]++
			if x.named[i][v] == 1 && x.unwritten[i][v] > 0 {
				if wake[i] == nil {
					wake[i] = map[uint32]bool{}
				}
				wake[i][v], any = true, true
			}
		case compile.Delete:
			if x.named[i][v]--; x.named[i][v] <= 0 {
				delete(x.named[i], v)
			}
		}
	}
	for d := range tables {
		for _, c := range tables[d] {
			if i, v, ok := attrOf(policy.Direction(d), c.Key); ok {
				count(i, v, c.Op)
			}
		}
	}
	for _, c := range guards {
		count(0, uint32(c.Key[0]), c.Op)
		count(0, uint32(c.Key[1]), c.Op)
	}
	return wake, any
}

// attrElems writes the attribute elements of identity id: those that
// differ from old (nil: it holds none yet), and only those whose value is
// named.
func (m *model) attrElems(t *tx, id compile.IdentityID, old *compile.IdentityAttrs, nw compile.IdentityAttrs) {
	x, k := m.attrs, u32(uint32(id))
	nv := attrValues(nw)
	var ov [numAttrs]uint32
	if old != nil {
		ov = attrValues(*old)
	}
	for i := range nv {
		have := x.has(id, i)
		if old != nil {
			if ov[i] == nv[i] && (have || x.named[i][nv[i]] == 0) {
				continue
			}
			if !have {
				x.unwritten[i][ov[i]]--
			}
		}
		set := m.b.n(attrSet(i))
		if have {
			t.del(set, nftables.SetElement{Key: k})
		}
		want := x.named[i][nv[i]] > 0
		if want {
			t.add(set, nftables.SetElement{Key: k, Val: u32(nv[i])})
		} else {
			x.unwritten[i][nv[i]]++
		}
		x.mark(id, i, want)
	}
}

// wakeAttrs writes the elements of values that became named (nameValues)
// for the identities of s, and the lingering ones, that hold them
// unwritten.
func (m *model) wakeAttrs(t *tx, s *compile.State, wake [numAttrs]map[uint32]bool) {
	x := m.attrs
	visit := func(id compile.IdentityID, a compile.IdentityAttrs) {
		v := attrValues(a)
		for i := range v {
			if wake[i] == nil || !wake[i][v[i]] || x.has(id, i) {
				continue
			}
			t.add(m.b.n(attrSet(i)), nftables.SetElement{Key: u32(uint32(id)), Val: u32(v[i])})
			x.mark(id, i, true)
			x.unwritten[i][v[i]]--
		}
	}
	s.EachIdentity(visit)
	for id, l := range m.lingerIdent {
		visit(id, l.attrs)
	}
}

// dropAttrs deletes the attribute elements of an identity that goes.
func (m *model) dropAttrs(t *tx, id compile.IdentityID, a compile.IdentityAttrs) {
	x, v := m.attrs, attrValues(a)
	for i := range numAttrs {
		if x.has(id, i) {
			t.del(m.b.n(attrSet(i)), nftables.SetElement{Key: u32(uint32(id))})
			x.mark(id, i, false)
		} else {
			x.unwritten[i][v[i]]--
		}
	}
}
