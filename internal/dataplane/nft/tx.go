package nft

import (
	"fmt"
	"sort"
	"sync/atomic"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// conn is the part of *nftables.Conn that writes; tests record it.
type conn interface {
	AddTable(*nftables.Table) *nftables.Table
	AddChain(*nftables.Chain) *nftables.Chain
	DelChain(*nftables.Chain)
	FlushChain(*nftables.Chain)
	AddRule(*nftables.Rule) *nftables.Rule
	AddSet(*nftables.Set, []nftables.SetElement) error
	DelSet(*nftables.Set)
	FlushSet(*nftables.Set)
	SetAddElements(*nftables.Set, []nftables.SetElement) error
	SetDeleteElements(*nftables.Set, []nftables.SetElement) error
	AddObj(nftables.Obj) nftables.Obj
	DeleteObject(nftables.Obj)
	Flush() error
}

// tx collects one transaction. send writes it in the order the kernel
// needs within one batch: objects and chains before the rules and
// elements that refer to them; element deletions before additions (an
// update is a deletion and an addition of the same key); what is swept
// last, rules before the sets and chains they refer to.
type tx struct {
	table      *nftables.Table
	pre        *tx  // the preparatory transaction, sent first (nil in pre itself)
	post       *tx  // sent after the switch: what only packets already on their way may still use (nil when none)
	base       bool // create the table and its base chains (no-ops when they exist)
	counters   []string
	chains     []string
	sets       []*nftables.Set
	rules      []chainRules
	flushSets  []string // emptied before the element changes
	dels, adds map[string][]nftables.SetElement
	sweepRules []string // chains to flush before the deletions
	delSets    []string
	delChains  []string
	delObjs    []string
}

type chainRules struct {
	chain string
	flush bool
	rules [][]expr.Any
	notes []string // comments, by rule; may be shorter than rules
}

// newTx returns a transaction with its preparatory one. The kernel's
// interval-map backend (pipapo) publishes what a transaction added to it
// only after the transaction's generation is live: an element added, or
// deleted and added again, is missing for a moment. So whatever the
// switch will refer to (a new generation whole; new port maps, outcome
// chains and counters) is written first, in a transaction that nothing
// refers to yet and so changes no verdict; the switch follows in one
// transaction.
func newTx(t *nftables.Table) *tx {
	out := newBareTx(t)
	out.pre = newBareTx(t)
	return out
}

func newBareTx(t *nftables.Table) *tx {
	return &tx{table: t, dels: map[string][]nftables.SetElement{}, adds: map[string][]nftables.SetElement{}}
}

func (t *tx) addRules(chain string, flush bool, rules [][]expr.Any, notes ...string) {
	t.rules = append(t.rules, chainRules{chain: chain, flush: flush, rules: rules, notes: notes})
}

func (t *tx) add(set string, e nftables.SetElement) { t.adds[set] = append(t.adds[set], e) }
func (t *tx) del(set string, e nftables.SetElement) { t.dels[set] = append(t.dels[set], e) }

// perSet counts the element operations by set (without the generation
// suffix), for reports.
func (t *tx) perSet(into map[string]int) {
	for n, l := range t.adds {
		into[baseName(n)] += len(l)
	}
	for n, l := range t.dels {
		into[baseName(n)] += len(l)
	}
}

// elements counts the element operations.
func (t *tx) elements() int {
	n := 0
	for _, l := range t.adds {
		n += len(l)
	}
	for _, l := range t.dels {
		n += len(l)
	}
	return n
}

func (t *tx) empty() bool {
	return len(t.counters) == 0 && len(t.chains) == 0 && len(t.sets) == 0 &&
		len(t.rules) == 0 && len(t.flushSets) == 0 && t.elements() == 0 && len(t.delSets) == 0 && len(t.delChains) == 0 &&
		len(t.delObjs) == 0 && len(t.sweepRules) == 0
}

var setIDs atomic.Uint32

// nextSetID numbers sets created in a batch. (The library's own counter is
// a global without a lock.)
func nextSetID() uint32 { return setIDs.Add(1) }

// maxChunkElems and maxChunkBytes bound one element message: the
// library silently overflows a 16-bit attribute length past ~64 KiB.
const (
	maxChunkElems = 1000
	maxChunkBytes = 48 << 10
)

func (t *tx) send(c conn) error {
	if t.base {
		c.AddTable(t.table)
		for _, ch := range baseChains(t.table) {
			c.AddChain(ch)
		}
	}
	for _, n := range t.counters {
		c.AddObj(&nftables.CounterObj{Table: t.table, Name: n})
	}
	for _, n := range t.chains {
		c.AddChain(&nftables.Chain{Name: n, Table: t.table})
	}
	for _, s := range t.sets {
		if err := c.AddSet(s, nil); err != nil {
			return errorf("add set %q: %w", s.Name, err)
		}
	}
	for _, cr := range t.rules {
		ch := &nftables.Chain{Name: cr.chain, Table: t.table}
		if cr.flush {
			c.FlushChain(ch)
		}
		for i, r := range cr.rules {
			rule := &nftables.Rule{Table: t.table, Chain: ch, Exprs: r}
			if i < len(cr.notes) && cr.notes[i] != "" {
				rule.UserData = userdata.AppendString(nil, userdata.TypeComment, cr.notes[i])
			}
			c.AddRule(rule)
		}
	}
	for _, n := range t.flushSets {
		c.FlushSet(&nftables.Set{Table: t.table, Name: n})
	}
	if err := t.sendElements(c, t.dels, c.SetDeleteElements); err != nil {
		return err
	}
	if err := t.sendElements(c, t.adds, c.SetAddElements); err != nil {
		return err
	}
	for _, n := range t.sweepRules {
		c.FlushChain(&nftables.Chain{Name: n, Table: t.table})
	}
	for _, n := range t.delSets {
		c.DelSet(&nftables.Set{Table: t.table, Name: n})
	}
	for _, n := range t.delChains {
		c.DelChain(&nftables.Chain{Name: n, Table: t.table})
	}
	for _, n := range t.delObjs {
		c.DeleteObject(&nftables.CounterObj{Table: t.table, Name: n})
	}
	return nil
}

func (t *tx) sendElements(c conn, m map[string][]nftables.SetElement,
	op func(*nftables.Set, []nftables.SetElement) error) error {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		set := &nftables.Set{Table: t.table, Name: n}
		for _, chunk := range chunks(m[n]) {
			if err := op(set, chunk); err != nil {
				return errorf("elements of set %q: %w", n, err)
			}
		}
	}
	return nil
}

// chunks splits elements into messages that stay within the netlink
// attribute length.
func chunks(els []nftables.SetElement) [][]nftables.SetElement {
	var out [][]nftables.SetElement
	start, size := 0, 0
	for i, e := range els {
		n := elemSize(e)
		if i > start && (i-start >= maxChunkElems || size+n > maxChunkBytes) {
			out = append(out, els[start:i])
			start, size = i, 0
		}
		size += n
	}
	if start < len(els) {
		out = append(out, els[start:])
	}
	return out
}

// elemSize over-estimates the netlink size of one element.
func elemSize(e nftables.SetElement) int {
	pad := func(n int) int { return (n + 3) &^ 3 }
	n := 4 + 8 + 8 + pad(len(e.Key))
	if len(e.KeyEnd) > 0 {
		n += 8 + pad(len(e.KeyEnd))
	}
	if len(e.Val) > 0 {
		n += 8 + pad(len(e.Val))
	}
	if e.VerdictData != nil {
		n += 24 + pad(len(e.VerdictData.Chain)+1)
	}
	return n
}

// String summarises the transaction, for logs.
func (t *tx) String() string {
	rules := 0
	for _, cr := range t.rules {
		rules += len(cr.rules)
	}
	return fmt.Sprintf("%d counters, %d chains, %d sets, %d chain rewrites (%d rules), %d element operations, sweep %d/%d/%d, %d counters deleted",
		len(t.counters), len(t.chains), len(t.sets), len(t.rules), rules, t.elements(),
		len(t.sweepRules), len(t.delSets), len(t.delChains), len(t.delObjs))
}
