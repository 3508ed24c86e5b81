package manager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/flows"
	"github.com/bulkhead-dev/bulkhead/internal/manager/flowstore"
)

// The flows: agents send their batches (POST /v1/flows), the store
// (internal/manager/flowstore) keeps them, operators and auditors ask
// (GET /v1/flows, ?follow=1 to stream what arrives, /v1/flows/counts).

// FlowConfig bounds the flow store (flowstore.Config; zero: its
// defaults, 7 days and 10 GiB). It lives in DataDir/flows.
type FlowConfig struct {
	MaxAge   time.Duration
	MaxBytes int64
}

const flowRetainEvery = time.Minute

// openFlows opens the flow store in the data directory.
func (m *Manager) openFlows() error {
	s, err := flowstore.Open(flowstore.Config{Dir: m.cfg.DataDir + "/flows", MaxAge: m.cfg.Flows.MaxAge,
		MaxBytes: m.cfg.Flows.MaxBytes, Now: m.cfg.Now, Logger: m.log})
	if err != nil {
		return err
	}
	m.flowStore = s
	return nil
}

// flowRetainLoop applies the store's retention every minute.
func (m *Manager) flowRetainLoop(ctx context.Context) {
	for {
		sleep(ctx, flowRetainEvery)
		if ctx.Err() != nil {
			return
		}
		if _, _, err := m.flowStore.Retain(ctx); err != nil && ctx.Err() == nil {
			m.log.Error("flow retention", "err", err)
		}
	}
}

// postFlows takes one batch from an agent. A host sends only its own
// flows: the batch's host, if named, must be the certificate's, and the
// records are stored as that host's whatever they say.
func (m *Manager) postFlows(w http.ResponseWriter, r *http.Request, p principal) error {
	var b flows.Batch
	if err := decodeBatch(w, r, &b); err != nil {
		return err
	}
	if b.Host != "" {
		if err := sameHost(p, b.Host); err != nil {
			return err
		}
	}
	if b.Stream == "" {
		return fault.New(fault.Invalid, nil, "flow batch: stream: empty; want the collector's stream id")
	}
	if err := m.ownFlows(p.name, &b); err != nil {
		return err
	}
	added, err := m.flowStore.Add(r.Context(), p.name, &b)
	if err != nil {
		return err
	}
	if added {
		m.detectFlows(b.Records)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// ownFlows refuses a batch with a record between two workloads of the
// inventory of which neither is on host: such a connection never crossed
// that host's dataplane. Addresses outside the inventory (the host's
// own, the outside world) are the host's to report.
func (m *Manager) ownFlows(host string, b *flows.Batch) error {
	for i := range b.Records {
		r := &b.Records[i]
		src, dst := m.inv.Owner(r.Src.Addr), m.inv.Owner(r.Dst.Addr)
		if src != nil && dst != nil && src.Host != host && dst.Host != host {
			return fault.New(fault.Forbidden, nil, "flow batch %s/%d: records[%d]: %s → %s is between workloads of hosts %s and %s; host %s reports only flows of its own workloads or addresses",
				b.Stream, b.Seq, i, r.Src.Addr, r.Dst.Addr, src.Host, dst.Host, host)
		}
	}
	return nil
}

// decodeBatch reads a flow batch with encoding/json, unknown fields
// refused, rather than through decodeStrict as every other body: strict
// decoding walks the body token by token and took 56% of the manager's
// CPU at ingest (docs/benchmarks.md, "Flow ingest over HTTPS"), and a batch is data
// the store keeps as it is, not an object that is validated, proven and
// enforced. What strict adds (keys in their exact case, each once) guards
// the one way in for objects; a flow with a duplicated key is stored with
// the last value, which is what the sender said last.
func decodeBatch(w http.ResponseWriter, r *http.Request, b *flows.Batch) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return fault.New(fault.Unsupported, nil, "request body: Content-Type %q; send application/json", ct)
	}
	data, err := io.ReadAll(r.Body) // admit bounds it (http.MaxBytesReader) and the time to read it
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fault.New(fault.TooLarge, nil, "request body: larger than the limit of %d bytes", tooBig.Limit)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fault.New(fault.Timeout, nil, "request body: not received in time (the limits are in docs/manager.md)")
		}
		return fault.New(fault.BadRequest, nil, "request body: %w", err)
	}
	bodyRead(w)
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(b); err != nil {
		return fault.New(fault.BadRequest, nil, "request body: flow batch: %w", err)
	}
	if dec.More() {
		return fault.New(fault.BadRequest, nil, "request body: flow batch: data after the batch")
	}
	return nil
}

// getFlows answers a query, and with follow=1 goes on with every flow
// that matches as it arrives, one JSON object a line.
func (m *Manager) getFlows(w http.ResponseWriter, r *http.Request, _ principal) error {
	q, follow, err := flowQuery(r)
	if err != nil {
		return err
	}
	if !follow {
		fs, trunc, err := m.flowStore.Query(r.Context(), q)
		if err != nil {
			return err
		}
		if fs == nil {
			fs = []api.Flow{}
		}
		writeJSON(w, http.StatusOK, api.FlowList{Flows: fs, Truncated: trunc})
		return nil
	}
	ch, stop := m.flowStore.Follow() // before the query: nothing falls between
	defer stop()
	fs, _, err := m.flowStore.Query(r.Context(), q)
	if err != nil {
		return err
	}
	return m.followFlows(r.Context(), w, q, fs, ch)
}

func (m *Manager) followFlows(ctx context.Context, w http.ResponseWriter, q flowstore.Query, past []api.Flow, ch <-chan []api.Flow) error {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	var last uint64
	write := func(fs []api.Flow) error {
		_ = rc.SetWriteDeadline(time.Now().Add(m.cfg.Limits.WriteTimeout))
		for i := range fs {
			if fs[i].ID <= last || !q.Match(&fs[i]) || !inRange(&fs[i], q) {
				continue
			}
			if err := enc.Encode(&fs[i]); err != nil {
				return err
			}
		}
		return rc.Flush()
	}
	if err := write(past); err != nil {
		return nil // the reader left
	}
	for _, f := range past {
		last = max(last, f.ID)
	}
	beat := time.NewTicker(m.cfg.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case fs, ok := <-ch:
			if !ok {
				return nil // too slow, or the manager closes: the client asks again
			}
			if write(fs) != nil {
				return nil
			}
		case <-beat.C:
			_ = rc.SetWriteDeadline(time.Now().Add(m.cfg.Limits.WriteTimeout))
			if _, err := w.Write([]byte("\n")); err != nil || rc.Flush() != nil {
				return nil
			}
		case <-ctx.Done():
			return nil
		}
	}
}

func inRange(f *api.Flow, q flowstore.Query) bool {
	t := f.End
	if t.IsZero() {
		t = f.Start
	}
	return (q.Since.IsZero() || !t.Before(q.Since)) && (q.Until.IsZero() || t.Before(q.Until))
}

// getFlowCounts answers what was lost, suppressed and hit.
func (m *Manager) getFlowCounts(w http.ResponseWriter, _ *http.Request, _ principal) error {
	writeJSON(w, http.StatusOK, m.flowStore.Counts())
	return nil
}

// flowQuery reads GET /v1/flows's parameters.
func flowQuery(r *http.Request) (q flowstore.Query, follow bool, err error) {
	v := r.URL.Query()
	q.Workload, q.Namespace, q.Host, q.Rule = v.Get("workload"), v.Get("namespace"), v.Get("host"), v.Get("rule")
	q.Verdict = flows.Verdict(v.Get("verdict"))
	bad := func(name, got, want string) error {
		return fault.New(fault.BadRequest, nil, "%s: %q: want %s", name, got, want)
	}
	if s := v.Get("port"); s != "" {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil || n == 0 {
			return q, false, bad("port", s, "a port, 1 to 65535")
		}
		q.Port = uint16(n)
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > flowstore.MaxLimit {
			return q, false, bad("limit", s, "1 to "+strconv.Itoa(flowstore.MaxLimit))
		}
		q.Limit = n
	}
	for _, t := range []struct {
		name string
		to   *time.Time
	}{{"since", &q.Since}, {"until", &q.Until}} {
		if s := v.Get(t.name); s != "" {
			if *t.to, err = time.Parse(time.RFC3339Nano, s); err != nil {
				return q, false, bad(t.name, s, "a time in RFC 3339 (2026-12-01T12:00:00Z)")
			}
		}
	}
	switch s := v.Get("follow"); s {
	case "", "0", "false":
	case "1", "true":
		follow = true
	default:
		return q, false, bad("follow", s, "1 or 0")
	}
	return q, follow, nil
}
