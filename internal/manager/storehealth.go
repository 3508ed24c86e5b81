package manager

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// The manager checks that its store can commit (a linearizable read of
// the revision: for etcd, a leader with a quorum behind it) every
// storeProbeEvery, so that /readyz answers at once, from the last check,
// and a load balancer stops sending requests that would fail. A request
// that finds the store unavailable marks it so at once.
const (
	storeProbeEvery   = time.Second
	storeProbeTimeout = 2 * time.Second
	// storeRetryAfter is the Retry-After of a 503 for a store that cannot
	// answer: about an etcd leader election and a probe.
	storeRetryAfter = "3"
)

// storeHealth is the outcome of the last probe of the store.
type storeHealth struct {
	mu  sync.Mutex
	err error // nil: the store answered
}

func (h *storeHealth) get() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// set records err and reports whether the health changed.
func (h *storeHealth) set(err error) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	changed := (h.err == nil) != (err == nil)
	h.err = err
	return changed
}

// probeStore checks the store every storeProbeEvery until ctx ends,
// logging when it becomes unavailable and when it is back.
func (m *Manager) probeStore(ctx context.Context) {
	t := time.NewTicker(storeProbeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, storeProbeTimeout)
		_, err := m.st.Rev(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, store.ErrUnavailable) && errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: no answer within %s (%w)", store.ErrUnavailable, storeProbeTimeout, err)
		}
		m.storeAnswered(err)
	}
}

// storeAnswered records how a call to the store ended: only whether the
// store could answer counts, not whether it refused the request.
func (m *Manager) storeAnswered(err error) {
	if err != nil && !errors.Is(err, store.ErrUnavailable) {
		return
	}
	if m.storeOK.set(err) {
		if err != nil {
			m.log.Warn("the store is unavailable: not ready until it answers again", "err", err)
		} else {
			m.log.Info("the store answers again: ready")
		}
	}
}

// storeUnavailable answers a request that failed because the store could
// not answer: 503 with the cause and a Retry-After, wherever in the
// handler's chain of errors it arose. It reports whether it answered.
func (m *Manager) storeUnavailable(w http.ResponseWriter, err error) bool {
	if !errors.Is(err, store.ErrUnavailable) {
		return false
	}
	m.storeAnswered(err)
	w.Header().Set("Retry-After", storeRetryAfter)
	writeJSON(w, http.StatusServiceUnavailable, api.APIError{Error: err.Error()})
	return true
}
