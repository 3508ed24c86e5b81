package escalate

import (
	"time"
)

// watchState is what the watcher compares between its ticks, to log
// transitions (a cause starts or stops failing connections closed), never
// single packets.
type watchState struct {
	last              map[Cause]uint64
	active            map[Cause]bool
	kernelFull        uint64
	kernelUndelivered uint64
	lastVerdictErr    error
	lastOffloadErr    error
	offloadFailed     uint64
	offloadActive     bool
}

// watchInterval is how often the watcher expires memory, reads the
// kernel's counts and logs transitions.
const watchInterval = time.Second

func (h *Holder) watchLoop() {
	defer h.wg.Done()
	t := time.NewTicker(watchInterval)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
			h.watchOnce()
		}
	}
}

// watchOnce expires what has expired and logs every cause that began or
// ceased to fail connections closed since the last call.
func (h *Holder) watchOnce() {
	c := h.Counters() // reads the kernel's counts too
	now := time.Now()
	h.mu.Lock()
	h.expireMemoryLocked(now)
	h.settled.expire(now)
	w := &h.watch
	if w.last == nil {
		w.last, w.active = map[Cause]uint64{}, map[Cause]bool{}
	}
	type change struct {
		cause  Cause
		active bool
		delta  uint64
		total  uint64
	}
	var changes []change
	for _, cause := range Causes {
		n := c.FailedClosed[cause]
		grew := n > w.last[cause]
		if grew != w.active[cause] {
			changes = append(changes, change{cause, grew, n - w.last[cause], n})
		}
		w.active[cause], w.last[cause] = grew, n
	}
	verr, oerr := w.lastVerdictErr, w.lastOffloadErr
	offloadGrew := c.OffloadFailed > w.offloadFailed
	offloadChanged := offloadGrew != w.offloadActive
	w.offloadFailed, w.offloadActive = c.OffloadFailed, offloadGrew
	h.mu.Unlock()

	for _, ch := range changes {
		if ch.active {
			attrs := []any{"cause", string(ch.cause), "since_last", ch.delta, "total", ch.total}
			if ch.cause == CauseVerdict && verr != nil {
				attrs = append(attrs, "err", verr)
			}
			h.log.Warn("escalations failing closed", attrs...)
		} else {
			h.log.Info("escalations no longer failing closed", "cause", string(ch.cause), "total", ch.total)
		}
	}
	if offloadChanged {
		if offloadGrew {
			h.log.Warn("remembered decisions not installed in the kernel (still answered here)", "err", oerr)
		} else {
			h.log.Info("remembered decisions installed in the kernel again")
		}
	}
}
