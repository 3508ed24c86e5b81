package up

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/flows"
)

// logTable keeps the latest dataplane log record per (source,
// destination, port), so that a demo client can say what the kernel
// logged about its connection. The records come from the flow
// collector's NFLOG reader (flows.Config.OnLog): one reader of the
// dataplane's log group, whose records are also stored as flows.
type logTable struct {
	mu   sync.Mutex
	recs map[flowKey]logRecord
}

type flowKey struct {
	src, dst netip.Addr
	port     uint16
}

type logRecord struct {
	text string
	at   time.Time
}

// maxRecords bounds the records kept; older ones are dropped first.
const maxRecords = 4096

func newLogTable() *logTable { return &logTable{recs: map[flowKey]logRecord{}} }

// observe takes one log record (flows.Config.OnLog).
func (r *logTable) observe(ev flows.LogEvent) {
	text := string(ev.Hit.Kind)
	if ev.Hit.ID != "" {
		text += " " + ev.Hit.ID
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.recs) >= maxRecords {
		clear(r.recs)
	}
	r.recs[flowKey{ev.Src, ev.Dst, ev.Port}] = logRecord{text: text, at: time.Now()}
}

// find returns the record about a connection attempted at or after
// since, waiting briefly for it to arrive.
func (r *logTable) find(ctx context.Context, src, dst netip.Addr, port int, since time.Time) string {
	if r == nil {
		return ""
	}
	k := flowKey{src, dst, uint16(port)}
	for range 10 {
		r.mu.Lock()
		rec, ok := r.recs[k]
		r.mu.Unlock()
		if ok && !rec.at.Before(since) {
			return rec.text
		}
		select {
		case <-ctx.Done():
			return ""
		case <-time.After(20 * time.Millisecond):
		}
	}
	return ""
}
