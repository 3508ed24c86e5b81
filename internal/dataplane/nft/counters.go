package nft

import (
	"context"
	"maps"

	"github.com/google/nftables"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
)

// Counters reads what the table counted: per rule (the elements of the
// rule counter set, keyed by rule id), per wall (named counters, by name)
// and the anti-spoofing counter. Rule ids and wall names are known from
// the state Apply wrote; before the first Apply only Spoofed is filled.
// It reads on its own netlink socket, so it may run beside an Apply; it
// reads one element per rule.
func (d *Dataplane) Counters(ctx context.Context) (dataplane.Counters, error) {
	out := dataplane.Counters{Rules: map[string]dataplane.Counter{}, Walls: map[string]dataplane.Counter{}}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return out, dataplane.ErrClosed
	}
	var ruleOf, wallOf map[string]string
	if d.model != nil { // copies: Apply changes ruleOf in place
		ruleOf, wallOf = maps.Clone(d.model.ruleOf), maps.Clone(d.model.wallOf)
	}
	c, err := d.dial() // under the lock: Close may not release the namespace meanwhile
	d.mu.Unlock()
	if err != nil {
		return out, err
	}
	defer c.CloseLasting()
	if err := ctx.Err(); err != nil {
		return out, errorf("counters: %w", err)
	}
	objs, err := c.GetObjects(table())
	if err != nil {
		return out, errorf("read counters of table inet %s: %w", TableName, err)
	}
	for _, o := range objs {
		co, ok := o.(*nftables.CounterObj)
		if !ok {
			continue
		}
		v := dataplane.Counter{Packets: co.Packets, Bytes: co.Bytes}
		switch {
		case co.Name == counterSpoofed:
			out.Spoofed = v
		case wallOf[co.Name] != "":
			out.Walls[wallOf[co.Name]] = v
		}
	}
	if len(ruleOf) == 0 {
		return out, nil
	}
	els, err := c.GetSetElements(&nftables.Set{Table: table(), Name: setRuleCounters})
	if err != nil {
		return out, errorf("read set %s: %w", setRuleCounters, err)
	}
	for _, e := range els {
		if id := ruleOf[string(e.Key)]; id != "" && e.Counter != nil {
			out.Rules[id] = dataplane.Counter{Packets: e.Counter.Packets, Bytes: e.Counter.Bytes}
		}
	}
	return out, nil
}
