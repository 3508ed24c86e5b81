package nft

import (
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
)

// found is what readTable learnt of the table in the kernel: names only,
// never a set's elements.
type found struct {
	exists, ours bool
	ruleCounters bool // the rule counter set is there
	maxGen       int
	chains       []string
	sets         []string
	counters     []string
}

// readTable lists Bulkhead's table: its chains, sets and counters, and
// whether it carries the tag. The lists are small (a few hundred names).
func readTable(c *nftables.Conn) (found, error) {
	var f found
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return f, errorf("list tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TableName {
			f.exists = true
		}
	}
	if !f.exists {
		return f, nil
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return f, errorf("list chains of table inet %s: %w", TableName, err)
	}
	tagged, base := false, 0
	for _, ch := range chains {
		if ch.Table.Name != TableName {
			continue
		}
		f.chains = append(f.chains, ch.Name)
		f.maxGen = max(f.maxGen, genOf(ch.Name))
		if !isBaseChain(ch.Name) {
			continue
		}
		base++
		rules, err := c.GetRules(table(), &nftables.Chain{Name: ch.Name, Table: table()})
		if err != nil {
			return f, errorf("list rules of chain %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			if s, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok && strings.HasPrefix(s, Tag) {
				tagged = true
			}
		}
	}
	sets, err := c.GetSets(table())
	if err != nil {
		return f, errorf("list sets of table inet %s: %w", TableName, err)
	}
	for _, s := range sets {
		f.sets = append(f.sets, s.Name)
		f.maxGen = max(f.maxGen, genOf(s.Name))
		if s.Name == setRuleCounters {
			f.ruleCounters = true
		}
	}
	objs, err := c.GetObjects(table())
	if err != nil {
		return f, errorf("list objects of table inet %s: %w", TableName, err)
	}
	for _, o := range objs {
		if co, ok := o.(*nftables.CounterObj); ok {
			f.counters = append(f.counters, co.Name)
		}
	}
	// An empty table is as good as none; anything else must carry the tag.
	f.ours = tagged || (base == 0 && len(f.chains) == 0 && len(f.sets) == 0 && len(f.counters) == 0)
	return f, nil
}

// newGeneration builds the transaction that writes want as a new
// generation beside whatever the table holds, points the base chains at
// it and deletes everything else (mark and sweep), keeping the counters
// that the new generation still uses.
func (d *Dataplane) newGeneration(want dataplane.Desired) (*tx, *model, error) {
	f, err := readTable(d.conn)
	if err != nil {
		return nil, nil, err
	}
	if f.exists && !f.ours {
		return nil, nil, errorf("table inet %s exists but was not made by Bulkhead (its base chains lack the %q tag): refusing to adopt it", TableName, Tag)
	}
	b := &builder{gen: f.maxGen + 1, logGroup: d.opts.LogGroup, logRate: d.opts.LogRate,
		mark: d.opts.EscalateMark, queueNum: d.opts.QueueNum, queueNative: d.native}
	m := newModel(b)
	for _, n := range f.counters {
		m.counters[n] = ""
	}
	if f.ruleCounters {
		// Its keys (one per rule, a few thousand) are read once, so that
		// counters of rules gone meanwhile are swept and live ones kept.
		els, err := d.conn.GetSetElements(&nftables.Set{Table: table(), Name: setRuleCounters})
		if err != nil {
			return nil, nil, errorf("read set %s: %w", setRuleCounters, err)
		}
		m.adoptRuleCounters(els)
	}
	t := newTx(table())
	t.pre.base = true
	if !f.ruleCounters {
		t.pre.sets = append(t.pre.sets, ruleCounterSet(t.table))
	}
	m.create(t, want)
	t.rules = append(t.rules, b.baseRules()...)
	// The old generation goes in a transaction of its own, after the
	// switch: rules are consistent per generation for a packet's whole
	// walk, but map lookups see the maps as they are at that moment, so a
	// packet still walking the old chains when the switch commits would
	// miss the elements of maps deleted by the switch and fall through to
	// a drop (TestAdoptionHasNoWindow caught it about once in ten runs).
	old := &tx{table: t.table}
	for _, n := range f.chains {
		if !isPersistent(n) && genOf(n) != b.gen {
			old.sweepRules = append(old.sweepRules, n)
			old.delChains = append(old.delChains, n)
		}
	}
	for _, n := range f.sets {
		if !isPersistent(n) && genOf(n) != b.gen {
			old.delSets = append(old.delSets, n)
		}
	}
	if !old.empty() {
		t.post = old
	}
	if f.exists {
		d.log.Info("adopting table", "table", TableName, "previous generation", f.maxGen, "generation", b.gen)
	}
	return t, m, nil
}

// baseChains are the hooks: they stay for the table's whole life.
func baseChains(t *nftables.Table) []*nftables.Chain {
	accept := nftables.ChainPolicyAccept
	mk := func(name string, hook *nftables.ChainHook) *nftables.Chain {
		return &nftables.Chain{Name: name, Table: t, Hooknum: hook, Priority: nftables.ChainPriorityFilter,
			Type: nftables.ChainTypeFilter, Policy: &accept}
	}
	return []*nftables.Chain{
		mk(chainForward, nftables.ChainHookForward),
		mk(chainInput, nftables.ChainHookInput),
		mk(chainOutput, nftables.ChainHookOutput),
	}
}

func ruleCounterSet(t *nftables.Table) *nftables.Set {
	return &nftables.Set{Table: t, ID: nextSetID(), Name: setRuleCounters, KeyType: typeRuleKey,
		Counter: true, Comment: Tag}
}
