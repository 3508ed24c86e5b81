package escalations

import (
	"context"
	"fmt"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/decide"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/auditlog"
)

// followBuffer bounds the changes a follower may lag behind; past it the
// follower is cut off (its channel closed) rather than slowing deciders.
const followBuffer = 256

// add keeps rec, evicting the oldest decided records past MaxRecords. A
// held one counts against MaxHeld: add reports false, keeping it as
// decided-to-be, when MaxHeld are held already.
func (s *Service) add(rec *record, hold bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ok := true
	if hold {
		if s.held >= s.cfg.MaxHeld {
			ok = false
		} else {
			s.held++
			rec.answer, rec.done = make(chan answer, 1), make(chan struct{})
		}
	}
	s.records[rec.ID] = rec
	s.order = append(s.order, rec)
	for len(s.records) > s.cfg.MaxRecords {
		if !s.evictOne() {
			break
		}
	}
	if ok && hold {
		s.publish(rec)
	}
	return ok
}

// evictOne forgets the oldest decided record; mu is held.
func (s *Service) evictOne() bool {
	for i, r := range s.order {
		if r.State == api.EscalationDecided {
			delete(s.records, r.ID)
			s.order = append(s.order[:i], s.order[i+1:]...)
			return true
		}
	}
	return false
}

// finish decides rec as a says, audits it and publishes it. A decision
// that cannot be audited denies.
func (s *Service) finish(ctx context.Context, rec *record, dreq decide.Request, a answer, d decide.Decision) {
	now := s.cfg.Now()
	s.mu.Lock()
	rec.State = api.EscalationDecided
	rec.Outcome, rec.Verdict, rec.By, rec.Reason = string(a.outcome), verdictOf(a.outcome), a.by, a.reason
	if a.by == "" && a.actor == auditlog.System {
		rec.Rule = d.Rule
	} else {
		rec.Rule = ""
	}
	rec.Remember = ""
	if a.outcome == decide.Allow && d.Remember > 0 && a.by == "" {
		rec.Remember = d.Remember.String()
	}
	t := now.UTC()
	rec.Decided = &t
	rec.TookMs = float64(now.Sub(rec.Asked).Microseconds()) / 1000
	snap := rec.Escalation
	s.mu.Unlock()
	if err := s.audit(ctx, a.actor, "escalation.decide", &record{Escalation: snap}); err != nil {
		s.mu.Lock()
		rec.Outcome, rec.Verdict, rec.Remember = string(decide.Deny), api.VerdictDeny, ""
		rec.Reason = fmt.Sprintf("%s; not audited (%v): denied", a.reason, err)
		s.mu.Unlock()
	}
	s.mu.Lock()
	if rec.done != nil {
		s.held--
		close(rec.done)
	}
	key := dreq.Source.Key()
	h := append(s.history[key], decide.PastDecision{Outcome: rec.Outcome, Rule: rec.Rule, By: rec.By,
		Destination: destinationOf(dreq.Destination), Port: rec.Port, At: now})
	if len(h) > historyPerSource {
		h = h[len(h)-historyPerSource:]
	}
	if _, ok := s.history[key]; !ok && len(s.history) >= s.cfg.MaxRecords {
		clear(s.history) // bounded: many sources; the history is a hint for conditions
	}
	s.history[key] = h
	s.publish(rec)
	s.mu.Unlock()
}

func destinationOf(e decide.Endpoint) string {
	if e.Workload {
		return e.Namespace + "/" + e.Name
	}
	return e.Address
}

// audit writes one entry about rec.
func (s *Service) audit(ctx context.Context, actor audit.Actor, action string, rec *record) error {
	_, _, err := s.cfg.Audit.Commit(ctx, nil, nil, auditlog.Entry{Actor: actor, Action: action,
		Object: "escalations/" + rec.ID, Detail: rec.Escalation})
	if err != nil {
		s.log.Error("audit an escalation", "id", rec.ID, "action", action, "err", err)
	}
	return err
}

// Approve lets a held escalation through; Deny drops it. actor is the
// person (for the audit log), by how the record names them. Both wait
// until the decision is audited and return the record; an escalation
// that is not held (decided already, or unknown) is a fault.Conflict or
// fault.NotFound.
func (s *Service) Approve(ctx context.Context, id string, actor audit.Actor, by, reason string) (api.Escalation, error) {
	return s.answer(ctx, id, answer{outcome: decide.Allow, actor: actor, by: by, reason: reasonOr(reason, "approved by "+by)})
}

// Deny drops a held escalation; see Approve.
func (s *Service) Deny(ctx context.Context, id string, actor audit.Actor, by, reason string) (api.Escalation, error) {
	return s.answer(ctx, id, answer{outcome: decide.Deny, actor: actor, by: by, reason: reasonOr(reason, "denied by "+by)})
}

func reasonOr(reason, def string) string {
	if reason != "" {
		return def + ": " + reason
	}
	return def
}

func (s *Service) answer(ctx context.Context, id string, a answer) (api.Escalation, error) {
	s.mu.Lock()
	rec := s.records[id]
	switch {
	case rec == nil:
		s.mu.Unlock()
		return api.Escalation{}, fault.New(fault.NotFound, nil, "escalation %q: no such escalation on this manager (GET /v1/escalations lists them)", id)
	case rec.State != api.EscalationHeld || rec.answered:
		cur := rec.Escalation
		s.mu.Unlock()
		return cur, fault.New(fault.Conflict, nil, "escalation %s: decided already (%s %s); only a held one may be approved or denied", id, cur.Outcome, cur.By)
	}
	rec.answered = true
	rec.answer <- a
	done := rec.done
	s.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return api.Escalation{}, fault.New(fault.Unavailable, nil, "escalation %s: answered, but not yet recorded: %w", id, ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := rec.Escalation
	if cur.By != a.by {
		// The hold ran out, or its agent left, as the answer came.
		return cur, fault.New(fault.Conflict, nil, "escalation %s: decided otherwise before the answer arrived (%s: %s)", id, cur.Outcome, cur.Reason)
	}
	return cur, nil
}

// List returns the records, the newest first.
func (s *Service) List() []api.Escalation {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]api.Escalation, 0, len(s.order))
	for i := len(s.order) - 1; i >= 0; i-- {
		out = append(out, s.order[i].Escalation)
	}
	return out
}

// Get returns one record.
func (s *Service) Get(id string) (api.Escalation, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[id]
	if !ok {
		return api.Escalation{}, false
	}
	return r.Escalation, true
}

// Follow returns the records as they change (held, then decided) from
// now on, until stop is called; the channel is closed when the follower
// lags more than followBuffer changes behind.
func (s *Service) Follow() (changes <-chan api.Escalation, stop func()) {
	ch := make(chan api.Escalation, followBuffer)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.subs[ch]; ok {
			delete(s.subs, ch)
			close(ch)
		}
	}
}

// publish sends rec to the followers; mu is held.
func (s *Service) publish(rec *record) {
	for ch := range s.subs {
		select {
		case ch <- rec.Escalation:
		default:
			delete(s.subs, ch)
			close(ch)
		}
	}
}
