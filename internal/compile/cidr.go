package compile

import (
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// cidrSpace partitions the address space into intervals with the same
// membership in every CIDR (with its exceptions) that a rule or a segment
// names. Each distinct membership set is a CIDR class; outside addresses
// get one identity per class, and a workload's identity records the class
// of its address, because CIDR peers match workload addresses too.
type cidrSpace struct {
	atoms   map[string]int32 // canonical CIDR → atom id
	list    []policy.CIDR
	ivs     []cidrInterval // sorted, covering both families
	classes [][]int32      // class → sorted atom ids; class 0 is "no CIDR"
}

type cidrInterval struct {
	lo, hi netip.Addr
	class  int32
}

func cidrKey(c policy.CIDR) string {
	if len(c.Except) == 0 {
		return c.Prefix.Masked().String()
	}
	parts := []string{c.Prefix.Masked().String()}
	ex := make([]string, 0, len(c.Except))
	for _, e := range c.Except {
		ex = append(ex, e.Masked().String())
	}
	sort.Strings(ex)
	return strings.Join(append(parts, ex...), ",")
}

func (cs *cidrSpace) atom(c policy.CIDR) int32 {
	k := cidrKey(c)
	if id, ok := cs.atoms[k]; ok {
		return id
	}
	id := int32(len(cs.list))
	cs.atoms[k] = id
	cs.list = append(cs.list, c)
	return id
}

func lastAddr(p netip.Prefix) netip.Addr {
	p = p.Masked()
	b := p.Addr().As16()
	off := 0
	if p.Addr().Is4() {
		off = 12
	}
	for i := p.Bits() + off*8; i < 128; i++ {
		b[i/8] |= 1 << (7 - uint(i%8))
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

var (
	v4First = netip.IPv4Unspecified()
	v6First = netip.IPv6Unspecified()
	v4Last  = netip.AddrFrom4([4]byte{255, 255, 255, 255})
	v6Last  = lastAddr(netip.MustParsePrefix("::/0"))
)

// build partitions the space once all atoms are known.
func (cs *cidrSpace) build() {
	n := 2
	for _, c := range cs.list {
		n += 2 * (1 + len(c.Except))
	}
	points := make([]netip.Addr, 0, n)
	points = append(points, v4First, v6First)
	add := func(p netip.Prefix) {
		points = append(points, p.Masked().Addr())
		if n := lastAddr(p).Next(); n.IsValid() && !(p.Addr().Is4() && n.Is6()) {
			points = append(points, n)
		}
	}
	for _, c := range cs.list {
		add(c.Prefix)
		for _, e := range c.Except {
			add(e)
		}
	}
	slices.SortFunc(points, netip.Addr.Compare)
	uniq := points[:0]
	for i, p := range points {
		if i == 0 || p != uniq[len(uniq)-1] {
			uniq = append(uniq, p)
		}
	}
	members := make([][]int32, len(uniq))
	for id, c := range cs.list {
		lo := sort.Search(len(uniq), func(i int) bool { return !uniq[i].Less(c.Prefix.Masked().Addr()) })
		for i := lo; i < len(uniq) && c.Prefix.Contains(uniq[i]); i++ {
			if c.Contains(uniq[i]) {
				members[i] = append(members[i], int32(id))
			}
		}
	}
	classOf := map[string]int32{"": 0}
	cs.classes = [][]int32{nil}
	cs.ivs = make([]cidrInterval, 0, len(uniq))
	for i, p := range uniq {
		hi := v6Last
		if p.Is4() {
			hi = v4Last
		}
		if i+1 < len(uniq) && uniq[i+1].Is4() == p.Is4() {
			hi = uniq[i+1].Prev()
		}
		k := atomListKey(members[i])
		cl, ok := classOf[k]
		if !ok {
			cl = int32(len(cs.classes))
			classOf[k] = cl
			cs.classes = append(cs.classes, members[i])
		}
		if n := len(cs.ivs); n > 0 && cs.ivs[n-1].class == cl && cs.ivs[n-1].hi.Next() == p {
			cs.ivs[n-1].hi = hi
			continue
		}
		cs.ivs = append(cs.ivs, cidrInterval{lo: p, hi: hi, class: cl})
	}
	// Both were made for the most they could hold; the program keeps them.
	cs.ivs, cs.list = fit(cs.ivs), fit(cs.list)
}

// fit returns s in an array of about its length when s's array is more
// than twice as long.
func fit[T any](s []T) []T {
	if cap(s) > 2*len(s)+16 {
		return slices.Clone(s)
	}
	return s
}

func atomListKey(ids []int32) string {
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(strconv.Itoa(int(id)))
		b.WriteByte(',')
	}
	return b.String()
}

// classOf returns the CIDR class of an address; the zero Addr (a workload
// without address) is in no CIDR: class 0.
func (cs *cidrSpace) classOf(a netip.Addr) int32 {
	if !a.IsValid() {
		return 0
	}
	a = a.Unmap()
	i := sort.Search(len(cs.ivs), func(i int) bool { return cs.ivs[i].hi.Compare(a) >= 0 })
	if i < len(cs.ivs) {
		return cs.ivs[i].class
	}
	return 0
}
