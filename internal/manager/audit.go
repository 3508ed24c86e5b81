package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// auditEntry is what a change records in the audit log (internal/audit),
// in the same Txn as the change.
type auditEntry struct {
	actor  principal
	action string
	object string
	detail any
}

func (p principal) actor() audit.Actor {
	switch p.kind {
	case "token":
		return audit.Actor{Kind: "token", Name: p.name, Role: p.role}
	case "host":
		return audit.Actor{Kind: "agent", Name: p.name}
	case "anonymous":
		return audit.Actor{Kind: "anonymous", Name: p.name}
	}
	return audit.Actor{Kind: "system", Name: p.String()}
}

// commitAudited commits conds and ops with the audit entry for them, at
// one revision. When the Txn fails only because another entry was
// appended meanwhile, it chains onto that one and tries again; ok is
// false when one of conds no longer holds.
func (m *Manager) commitAudited(ctx context.Context, conds []store.Cond, ops []store.Op, e auditEntry) (int64, bool, error) {
	var detail json.RawMessage
	if e.detail != nil {
		d, err := json.Marshal(e.detail)
		if err != nil {
			return 0, false, fmt.Errorf("manager: audit detail: %w", err)
		}
		detail = d
	}
	// One writer at a time in this process: the chain's head is a single
	// key, and local writers queueing here do not waste Txns on conflicts.
	m.auditMu.Lock()
	defer m.auditMu.Unlock()
	for attempt := 0; attempt < 20; attempt++ {
		head, err := audit.ReadHead(ctx, m.st)
		if err != nil {
			return 0, false, err
		}
		sealed, aconds, aops, err := audit.Append(head, audit.Entry{Time: m.now(), Actor: e.actor.actor(),
			Action: e.action, Object: e.object, Detail: detail})
		if err != nil {
			return 0, false, err
		}
		allConds := append(append([]store.Cond(nil), conds...), aconds...)
		allOps := append(append([]store.Op(nil), ops...), aops...)
		rev, ok, err := m.st.Txn(ctx, allConds, allOps)
		if err != nil {
			if errors.Is(err, store.ErrTooLarge) {
				return 0, false, fault.New(fault.TooLarge, nil, "the change is too large for one store transaction: %w", err)
			}
			return 0, false, fmt.Errorf("manager: commit %s: %w", e.action, err)
		}
		if ok {
			m.heads.note(audit.Head{Seq: sealed.Seq, Hash: sealed.Hash})
			return rev, true, nil
		}
		if held, err := m.holds(ctx, conds); err != nil || !held {
			return 0, false, err
		}
	}
	return 0, false, fault.New(fault.Unavailable, nil, "the audit log is too busy; try again")
}

// holds reports whether every condition still holds.
func (m *Manager) holds(ctx context.Context, conds []store.Cond) (bool, error) {
	for _, c := range conds {
		kv, err := m.st.Get(ctx, c.Key)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return false, fmt.Errorf("manager: read %s: %w", c.Key, err)
		}
		if kv.ModRev != c.ModRev {
			return false, nil
		}
	}
	return true, nil
}

func toAPI(e audit.Entry) api.AuditEntry {
	return api.AuditEntry{Seq: e.Seq, Time: e.Time, Actor: api.AuditActor(e.Actor), Action: e.Action, Object: e.Object,
		Detail: e.Detail, Revision: e.Revision, PrevHash: e.PrevHash, Hash: e.Hash}
}

func (m *Manager) getAudit(w http.ResponseWriter, r *http.Request, _ principal) error {
	q := r.URL.Query()
	from, limit := uint64(1), 1000
	if s := q.Get("from"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return fault.New(fault.BadRequest, nil, "from: %q: want an entry number", s)
		}
		from = n
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 10000 {
			return fault.New(fault.BadRequest, nil, "limit: %q: want 1 to 10000", s)
		}
		limit = n
	}
	// One entry more than asked for says whether there is a next page.
	entries, err := audit.ReadRange(r.Context(), m.st, from, limit+1)
	if err != nil {
		return err
	}
	out := api.AuditList{Items: []api.AuditEntry{}}
	for _, e := range entries {
		if len(out.Items) == limit {
			out.Next = e.Seq
			break
		}
		out.Items = append(out.Items, toAPI(e))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// getAuditVerify checks the whole chain against the anchor given
// (?anchor=SEQ:HASH), the head the store keeps, and the last head this
// manager wrote itself (kept outside the store: see heads).
func (m *Manager) getAuditVerify(w http.ResponseWriter, r *http.Request, _ principal) error {
	var anchor *audit.Head
	if s := r.URL.Query().Get("anchor"); s != "" {
		seq, hash, ok := strings.Cut(s, ":")
		n, err := strconv.ParseUint(seq, 10, 64)
		if !ok || err != nil || len(hash) != 64 {
			return fault.New(fault.BadRequest, nil, "anchor: %q: want SEQ:HASH, as a verify answered it in head", s)
		}
		anchor = &audit.Head{Seq: n, Hash: hash}
	}
	entries, err := m.verifiedLog(r.Context(), anchor)
	out := api.AuditVerify{Entries: uint64(len(entries))}
	var broken *audit.BrokenError
	switch {
	case errors.As(err, &broken):
		out.Problem, out.Seq = broken.Error(), broken.Seq
	case err != nil:
		return err
	default:
		out.OK = true
		if n := len(entries); n > 0 {
			out.Head = audit.Head{Seq: entries[n-1].Seq, Hash: entries[n-1].Hash}.String()
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
