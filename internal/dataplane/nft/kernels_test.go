package nft

import (
	"testing"

	"github.com/google/nftables/expr"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
)

// Older kernels — Debian 12's 6.1 among them; this machine's 6.18 does
// not — refuse, with EINVAL, a lookup without a destination register
// into a map: membership may only be asked of a plain set. Every rule of
// a generation keeps to that, so that the dataplane loads on them
// (internal/vmtest boots Debian's 6.1 to prove it).
func TestNoMembershipLookupIntoAMap(t *testing.T) {
	c, _ := unitCompiler(t, unitPolicy)
	m := testModel()
	gen := newTx(table())
	m.create(gen, dataplane.Desired{State: c.State()})
	maps := map[string]bool{}
	for _, s := range append(gen.pre.sets, gen.sets...) {
		maps[s.Name] = s.IsMap
	}
	for _, s := range m.b.sets(table()) {
		maps[s.Name] = s.IsMap
	}
	checked := 0
	for _, part := range []*tx{gen.pre, gen} {
		for _, cr := range part.rules {
			for i, r := range cr.rules {
				for _, e := range r {
					l, ok := e.(*expr.Lookup)
					if !ok || l.IsDestRegSet {
						continue
					}
					checked++
					isMap, known := maps[l.SetName]
					if !known && l.SetName != setRuleCounters {
						t.Errorf("chain %s rule %d: lookup into unknown set %s", cr.chain, i, l.SetName)
					}
					if isMap {
						t.Errorf("chain %s rule %d: membership lookup (no destination register) into the map %s: refused by older kernels (Debian 12's 6.1)", cr.chain, i, l.SetName)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no membership lookup seen: the test looks at the wrong rules")
	}
}
