package flows

import (
	"context"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
)

// seal closes the current batch: log records whose connection never came
// are made records, the kernel's losses and the suppressed counts are
// attached, and the batch goes to the deliverer (or, when it is behind,
// straight to the spool). final: the collector is closing.
func (c *Collector) seal(a *assembler, final bool) {
	now := time.Now()
	for k, p := range a.pending {
		if final || now.Sub(p.at) > pendingAge {
			delete(a.pending, k)
			c.hitRecords(a, k, p)
		}
	}
	if a.cur == nil {
		a.cur = &Batch{}
	}
	b := a.cur
	b.Suppressed, a.supp = a.supp, nil
	b.Lost = map[Cause]uint64{}
	for i, cause := range causes {
		if n := c.lostKernel[i].Swap(0); n > 0 {
			b.Lost[cause] = n
		}
	}
	c.mu.Lock()
	for cause, n := range b.Lost {
		c.stats.Lost[cause] += n
	}
	mergeCounts(b, &c.carry) // counted when they were carried
	c.carry = Batch{}
	c.mu.Unlock()
	if len(b.Records) == 0 && len(b.Lost) == 0 && len(b.Suppressed) == 0 {
		return
	}
	a.cur, a.drops = nil, map[dropKey]int{}
	seq, err := c.spool.nextSeq()
	if err != nil { // cannot number it: keep its counts for the next one
		c.log.Warn("seal batch", "err", err)
		c.keepCounts(b, LostSpoolError)
		return
	}
	b.Seq, b.Stream, b.Host, b.Sealed = seq, c.spool.stream, c.cfg.Host, now
	if final {
		c.batches <- b
		return
	}
	select {
	case c.batches <- b:
	default:
		c.spoolPut(b)
	}
}

// snapshotCounters reads the kernel's counters before collection starts:
// what they counted before is not this collector's to report.
func (c *Collector) snapshotCounters(ctx context.Context) {
	if c.cfg.Counters == nil {
		return
	}
	cs, err := c.cfg.Counters.Counters(ctx)
	if err != nil {
		c.log.Warn("read the dataplane's counters", "err", err)
	}
	c.base = cs
}

// readCounters reads the dataplane's counters every CounterInterval, on
// a goroutine of its own (a reading can take seconds), and hands each
// reading to the assembler.
func (c *Collector) readCounters(ctx context.Context) {
	defer c.reader.Done()
	tick := time.NewTicker(c.cfg.CounterInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cs, err := c.cfg.Counters.Counters(ctx)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("read the dataplane's counters", "err", err)
			}
			continue
		}
		select {
		case c.readings <- cs:
		case <-ctx.Done():
			return
		}
	}
}

// onReading adds to what the next batch reports as suppressed: per log
// record kind and id seen, how many more packets the kernel decided than
// records arrived, beyond what was reported. It compares the records seen
// now with the reading before this one: the records of the packets that
// reading counted have all arrived by now (the kernel holds NFLOG records
// at most 50 ms), so a record still in flight is never counted as
// suppressed; the figure is one reading late instead.
func (c *Collector) onReading(a *assembler, cs dataplane.Counters) {
	prev, ok := a.prev, a.prevOK
	a.prev, a.prevOK = cs, true
	if !ok {
		return
	}
	for sk := range a.seen {
		h := hitOfKey(sk)
		now, ok := counterOf(prev, h)
		if !ok {
			continue
		}
		base, _ := counterOf(a.base, h)
		counted := now - min(base, now)
		total := counted - min(counted, a.seen[sk])
		if total > a.reported[sk] {
			if a.supp == nil {
				a.supp = map[string]uint64{}
			}
			a.supp[sk] += total - a.reported[sk]
			a.reported[sk] = total
		}
	}
}

func hitOfKey(sk string) Hit {
	kind, id, _ := strings.Cut(sk, " ")
	return Hit{Kind: Verdict(kind), ID: id}
}

// counterOf is the kernel counter that counts every packet a log record
// of this kind and id is made for (before its rate limit).
func counterOf(cs dataplane.Counters, h Hit) (uint64, bool) {
	switch h.Kind {
	case Deny, Reject, Allow, Escalate:
		v, ok := cs.Rules[h.ID]
		return v.Packets, ok
	case Wall:
		v, ok := cs.Walls[h.ID]
		return v.Packets, ok
	case Spoofed:
		return cs.Spoofed.Packets, true
	}
	return 0, false // would-deny and no-entry: no counter of their own
}

// deliver hands batches to the Sink in order: straight through while it
// works and the spool is empty, else through the spool, retried with
// backoff. It ends when the assembler has closed the batches channel, after
// one more try at what the spool holds.
func (c *Collector) deliver() {
	defer c.wg.Done()
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	var retry <-chan time.Time // non-nil: the Sink failed, wait for it
	fail := func() {
		retry = time.After(backoff)
		backoff = min(2*backoff, maxBackoff)
	}
	for {
		if retry == nil && !c.spool.empty() {
			if err := c.sendOldest(); err != nil {
				fail()
			} else {
				backoff = minBackoff
				select {
				case b, ok := <-c.batches:
					if !ok {
						c.finish()
						return
					}
					c.spoolPut(b) // behind what the spool holds
				default:
				}
				continue
			}
		}
		select {
		case b, ok := <-c.batches:
			if !ok {
				c.finish()
				return
			}
			if retry != nil || !c.spool.empty() {
				c.spoolPut(b)
				continue
			}
			if err := c.send(b); err != nil {
				c.log.Warn("sink failed: spooling", "seq", b.Seq, "err", err)
				fail()
				c.spoolPut(b)
			}
		case <-retry:
			retry = nil
		}
	}
}

// finish tries once more to empty the spool when the collector closes.
func (c *Collector) finish() {
	deadline := time.Now().Add(5 * time.Second)
	for !c.spool.empty() && time.Now().Before(deadline) {
		if err := c.sendOldest(); err != nil {
			return
		}
	}
}

func (c *Collector) sendOldest() error {
	b, err := c.spool.oldest()
	if err != nil || b == nil {
		return err
	}
	if err := c.send(b); err != nil {
		return err
	}
	return c.spool.done(b.Seq)
}

const sendTimeout = 10 * time.Second

func (c *Collector) send(b *Batch) error {
	ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
	defer cancel()
	if err := c.cfg.Sink.Send(ctx, b); err != nil {
		return err
	}
	c.mu.Lock()
	c.stats.Delivered += uint64(len(b.Records))
	c.stats.Batches++
	c.mu.Unlock()
	return nil
}

// spoolPut writes a batch to the spool; what it cannot write is counted
// and carried into the next batch.
func (c *Collector) spoolPut(b *Batch) {
	refused, err := c.spool.put(b)
	if err != nil {
		c.log.Warn("spool batch", "seq", b.Seq, "err", err)
		c.keepCounts(b, LostSpoolError)
		return
	}
	if refused > 0 {
		c.mu.Lock()
		c.stats.Lost[LostSpoolFull] += uint64(refused)
		c.mu.Unlock()
	}
}

// keepCounts carries what b counts, and its records as lost by cause,
// into the next batch.
func (c *Collector) keepCounts(b *Batch, cause Cause) {
	c.mu.Lock()
	defer c.mu.Unlock()
	mergeCounts(&c.carry, b)
	if n := uint64(len(b.Records)); n > 0 {
		c.carry.Lost[cause] += n
		c.stats.Lost[cause] += n
	}
}
