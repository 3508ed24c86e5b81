package flows

import (
	"net/netip"
	"time"

	"github.com/ti-mo/conntrack"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
)

// assembler state: owned by the assemble goroutine.
type assembler struct {
	cur   *Batch
	drops map[dropKey]int // index in cur.Records of a dropped 5-tuple's record

	// Log records of packets let through wait here, by 5-tuple, for
	// their connection's DESTROY (they arrive after its NEW event: the
	// kernel batches NFLOG records for up to 50 ms).
	pending map[key]*pendingHits
	closing map[uint32]time.Time // when TCP began to close

	// suppressed: records seen and counted as suppressed per "kind id",
	// and the kernel's counters when collection started.
	seen     map[string]uint64
	reported map[string]uint64
	base     dataplane.Counters
	prev     dataplane.Counters // the last reading
	prevOK   bool
	supp     map[string]uint64 // for the next batch
}

type dropKey struct {
	k key
	h Hit
}

type pendingHits struct {
	hits []Hit
	at   time.Time
}

// Bounds of the assembler's tables; past them a record is made at once
// with what is known (docs/flows.md).
const (
	maxPending = 1 << 16
	maxClosing = 1 << 20
	pendingAge = 10 * time.Minute
)

func (c *Collector) assemble() {
	defer c.wg.Done()
	defer close(c.batches)
	a := &assembler{drops: map[dropKey]int{}, pending: map[key]*pendingHits{}, closing: map[uint32]time.Time{},
		seen: map[string]uint64{}, reported: map[string]uint64{}, base: c.base}
	tick := time.NewTicker(c.cfg.FlushInterval)
	defer tick.Stop()
	events := c.events
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			c.onEvent(a, ev)
		case r := <-c.logs:
			c.onRecord(a, r)
		case cs := <-c.readings:
			c.onReading(a, cs)
		case <-tick.C:
			c.seal(a, false)
		case <-c.stop:
			c.drain(a)
			c.seal(a, true)
			return
		}
		if a.cur != nil && len(a.cur.Records) >= c.cfg.MaxBatch {
			c.seal(a, false)
		}
	}
}

// drain takes what the readers left in the channels after they stopped
// (the conntrack reader has closed its channel).
func (c *Collector) drain(a *assembler) {
	for ev := range c.events {
		c.onEvent(a, ev)
	}
	for {
		select {
		case r := <-c.logs:
			c.onRecord(a, r)
		default:
			return
		}
	}
}

func (c *Collector) add(a *assembler, r Record) int {
	if a.cur == nil {
		a.cur = &Batch{}
	}
	a.cur.Records = append(a.cur.Records, r)
	c.count.records.Add(1)
	return len(a.cur.Records) - 1
}

func (c *Collector) onEvent(a *assembler, ev ctEvent) {
	f := ev.flow
	id := f.ID
	switch ev.typ {
	case uint8(conntrack.EventNew):
		c.count.new.Add(1)
	case uint8(conntrack.EventUpdate):
		c.count.update.Add(1)
		if t := f.ProtoInfo.TCP; t != nil && t.State >= tcpFinWait {
			if _, ok := a.closing[id]; !ok && len(a.closing) < maxClosing {
				a.closing[id] = ev.at
			}
		}
	case uint8(conntrack.EventDestroy):
		c.count.destroy.Add(1)
		c.add(a, c.connRecord(a, f, ev.at))
	}
}

// tcpFinWait is the first of conntrack's closing TCP states (FIN_WAIT,
// CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE).
const tcpFinWait = 4

func flowKey(f *conntrack.Flow) key {
	t := f.TupleOrig
	k := key{src: t.IP.SourceAddress, dst: t.IP.DestinationAddress, proto: t.Proto.Protocol,
		sport: t.Proto.SourcePort, dport: t.Proto.DestinationPort}
	if t.Proto.Protocol == 1 || t.Proto.Protocol == 58 {
		k.sport, k.dport = 0, uint16(t.Proto.ICMPType)<<8|uint16(t.Proto.ICMPCode)
	}
	return k
}

// connRecord makes the record of a connection conntrack destroyed.
func (c *Collector) connRecord(a *assembler, f *conntrack.Flow, at time.Time) Record {
	k := flowKey(f)
	r := Record{Start: f.Timestamp.Start, End: f.Timestamp.Stop, Proto: k.proto, Verdict: Allow, Source: FromConntrack,
		Src:  c.endpoint(k.src, k.sport),
		Dst:  c.endpoint(k.dst, k.dport),
		Orig: Count{f.CountersOrig.Packets, f.CountersOrig.Bytes}, Reply: Count{f.CountersReply.Packets, f.CountersReply.Bytes}}
	if r.End.IsZero() {
		r.End = at
	}
	if at, ok := a.closing[f.ID]; ok {
		delete(a.closing, f.ID)
		r.End = at
	}
	if p := a.pending[k]; p != nil {
		delete(a.pending, k)
		r.Hits = p.hits
	}
	for _, h := range r.Hits {
		switch {
		case h.Kind == WouldDeny:
			r.Verdict, r.Rule = WouldDeny, h.ID
		case r.Rule == "" && h.Kind == Escalate:
			r.Verdict, r.Rule = Escalate, h.ID
		case r.Rule == "":
			r.Rule = h.ID
		}
	}
	if r.Rule == "" && c.cfg.Resolver != nil {
		r.Rule = c.cfg.Resolver.Rule(k.src, k.dst, k.proto, k.dport)
	}
	return r
}

func (c *Collector) endpoint(addr netip.Addr, port uint16) Endpoint {
	e := Endpoint{Addr: addr, Port: port}
	if c.cfg.Resolver != nil {
		if w, ok := c.cfg.Resolver.Endpoint(addr); ok {
			w.Addr, w.Port = addr, port
			e = w
		}
	}
	return e
}

func (c *Collector) onRecord(a *assembler, r logRec) {
	c.count.logs.Add(1)
	a.seen[suppressKey(r.hit)]++
	if !r.hit.dropped() {
		p := a.pending[r.k]
		if p == nil {
			if len(a.pending) >= maxPending {
				c.hitRecords(a, r.k, &pendingHits{hits: []Hit{r.hit}, at: r.at})
				return
			}
			p = &pendingHits{at: r.at}
			a.pending[r.k] = p
		}
		for _, h := range p.hits {
			if h == r.hit {
				return
			}
		}
		p.hits = append(p.hits, r.hit)
		return
	}
	dk := dropKey{r.k, r.hit}
	if i, ok := a.drops[dk]; ok {
		rec := &a.cur.Records[i]
		rec.Orig.Packets++
		rec.Orig.Bytes += r.length
		rec.End = r.at
		return
	}
	a.drops[dk] = c.add(a, Record{Start: r.at, End: r.at, Proto: r.k.proto, Verdict: r.hit.Kind, Rule: r.hit.ID,
		Src: c.endpoint(r.k.src, r.k.sport), Dst: c.endpoint(r.k.dst, r.k.dport),
		Hits: []Hit{r.hit}, Orig: Count{1, r.length}, Source: FromNFLOG})
}

// hitRecords makes records of log records whose connection never showed
// up (or could not be kept): one per hit.
func (c *Collector) hitRecords(a *assembler, k key, p *pendingHits) {
	for _, h := range p.hits {
		c.add(a, Record{Start: p.at, End: p.at, Proto: k.proto, Verdict: h.Kind, Rule: h.ID,
			Src: c.endpoint(k.src, k.sport), Dst: c.endpoint(k.dst, k.dport),
			Hits: []Hit{h}, Orig: Count{Packets: 1}, Source: FromNFLOG})
	}
}

func suppressKey(h Hit) string {
	if h.ID == "" {
		return string(h.Kind)
	}
	return string(h.Kind) + " " + h.ID
}
