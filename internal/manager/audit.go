package manager

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/auditlog"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// HeadFile is where the manager keeps the last audit head it wrote, in
// its data directory (auditlog.HeadFile).
const HeadFile = auditlog.HeadFile

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
// one revision (auditlog.Log.Commit).
func (m *Manager) commitAudited(ctx context.Context, conds []store.Cond, ops []store.Op, e auditEntry) (int64, bool, error) {
	return m.auditLog.Commit(ctx, conds, ops, auditlog.Entry{Actor: e.actor.actor(), Action: e.action, Object: e.object, Detail: e.detail})
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
	entries, err := m.auditLog.Verified(r.Context(), anchor)
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

// getAuditHead signs the head of the log, once it verifies.
func (m *Manager) getAuditHead(w http.ResponseWriter, r *http.Request, _ principal) error {
	entries, err := m.auditLog.Verified(r.Context(), nil)
	var broken *audit.BrokenError
	if errors.As(err, &broken) {
		return fault.New(fault.Conflict, nil, "the audit log does not verify, so the manager signs no head of it: %w", err)
	} else if err != nil {
		return err
	}
	var head audit.Head
	if n := len(entries); n > 0 {
		head = audit.Head{Seq: entries[n-1].Seq, Hash: entries[n-1].Hash}
	}
	writeJSON(w, http.StatusOK, api.AuditHead(m.auditLog.Sign(head)))
	return nil
}

// saveOutside writes what the manager keeps outside the store: its audit
// head and the final states of access records.
func (m *Manager) saveOutside() {
	m.auditLog.SaveHead()
	if err := m.final.Save(m.finalPath()); err != nil {
		m.log.Error("revocations and used join tokens not kept", "err", err)
	}
}

// headLoop keeps the data directory's head, and the final states, at most
// a second behind.
func (m *Manager) headLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.saveOutside()
			return
		case <-t.C:
			m.saveOutside()
		}
	}
}
