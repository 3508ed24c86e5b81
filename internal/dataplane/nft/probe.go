package nft

import (
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// probeTable is the scratch table of the start-up probes. Every probe is
// one transaction that creates it, tries one feature and deletes it
// again, so that nothing is left whatever the outcome.
const probeTable = "bulkhead_probe"

type probe struct {
	name     string
	required bool
	try      func(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain) error
}

// Feature names reported by Features.
const (
	FeatureQueue          = "queue"
	FeatureConcatInterval = "concat-interval-maps"
	FeatureNamedCounters  = "named-counters"
	FeatureNFLOG          = "nflog"
	FeatureReject         = "reject"
)

func (d *Dataplane) probe() error {
	d.features = map[string]string{}
	rule := func(exprs ...expr.Any) func(*nftables.Conn, *nftables.Table, *nftables.Chain) error {
		return func(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain) error {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
			return nil
		}
	}
	probes := []probe{
		{name: "queue-native", try: rule(queueExpr(d.opts.QueueNum, true))},
		{name: "queue-xt", try: rule(queueExpr(d.opts.QueueNum, false))},
		{name: FeatureConcatInterval, required: true, try: probeConcatInterval},
		{name: FeatureNamedCounters, required: true, try: func(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain) error {
			c.AddObj(&nftables.CounterObj{Table: t, Name: "c"})
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: counterRef("c")})
			return nil
		}},
		{name: FeatureNFLOG, required: true, try: rule(nflog(d.opts.LogGroup, "bh probe", 10)...)},
		{name: FeatureReject, required: true, try: func(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain) error {
			for _, r := range rejectRules() {
				c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
			}
			return nil
		}},
	}
	ok := map[string]error{}
	for _, p := range probes {
		ok[p.name] = d.try(p)
		if p.required && ok[p.name] != nil {
			return errorf("kernel feature %s is missing (%v): Bulkhead needs it", p.name, ok[p.name])
		}
		if p.required {
			d.features[p.name] = "yes"
		}
	}
	switch {
	case ok["queue-native"] == nil:
		d.native, d.features[FeatureQueue] = true, "native nft queue"
	case ok["queue-xt"] == nil:
		d.features[FeatureQueue] = "xtables NFQUEUE target through nft_compat (native queue: " + ok["queue-native"].Error() + ")"
	default:
		return errorf("kernel feature queue is missing (native: %v; xtables NFQUEUE: %v): escalation cannot fail closed",
			ok["queue-native"], ok["queue-xt"])
	}
	return nil
}

func (d *Dataplane) try(p probe) error {
	t := &nftables.Table{Name: probeTable, Family: nftables.TableFamilyINet}
	c := d.conn
	c.AddTable(t)
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: "p", Table: t, Hooknum: nftables.ChainHookForward,
		Priority: nftables.ChainPriorityFilter, Type: nftables.ChainTypeFilter, Policy: &accept})
	if err := p.try(c, t, ch); err != nil {
		c.DelTable(t)
		_ = c.Flush()
		return err
	}
	c.DelTable(t)
	return c.Flush()
}

// probeConcatInterval makes a concatenated interval verdict map (the
// kernel's pipapo set) with one element and looks it up.
func probeConcatInterval(c *nftables.Conn, t *nftables.Table, ch *nftables.Chain) error {
	s := &nftables.Set{Table: t, ID: nextSetID(), Name: "m", IsMap: true, Interval: true, Concatenation: true,
		KeyType:  nftables.MustConcatSetType(typeU32, nftables.TypeInetService),
		DataType: nftables.TypeVerdict}
	if err := c.AddSet(s, []nftables.SetElement{{Key: portKey(1, 80), KeyEnd: portKey(1, 90),
		VerdictData: &expr.Verdict{Kind: expr.VerdictAccept}}}); err != nil {
		return err
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: cat(imm(reg(0), u32(1)),
		payload(expr.PayloadBaseTransportHeader, 2, 2, reg(1)), lookupMap("m", reg(0), 0))})
	return nil
}
