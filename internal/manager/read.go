package manager

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/revisions"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

func jsonUnmarshal(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec.Decode(v)
}

func (m *Manager) getObjects(w http.ResponseWriter, r *http.Request, _ principal) error {
	_, ps, err := m.head(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.ObjectList{Revision: ps.Rev(), Items: objectsOf(ps, kindFilter(r.URL.Query().Get("kind")))})
	return nil
}

func (m *Manager) listResource(res string) func(http.ResponseWriter, *http.Request, principal) error {
	return func(w http.ResponseWriter, r *http.Request, _ principal) error {
		_, ps, err := m.head(r.Context())
		if err != nil {
			return err
		}
		items := objectsOf(ps, func(ref api.ObjectRef) bool { return objects.Resource(ref.Kind) == res })
		writeJSON(w, http.StatusOK, api.ObjectList{Revision: ps.Rev(), Items: items})
		return nil
	}
}

// Pages of history: ?limit= (default and most) and the cursor a page
// answered as next.
const (
	defaultPage = 100
	maxPage     = 1000
)

// getRevisions answers a page of the revisions, newest first: ?limit=,
// and ?cursor= as the previous page answered it in next. It reads the
// head and one record per revision answered, so a page costs the same
// however long the history. The page waits until this manager's copy
// holds the head's record, which may be a moment old if another manager
// made it.
func (m *Manager) getRevisions(w http.ResponseWriter, r *http.Request, _ principal) error {
	limit, err := pageLimit(r)
	if err != nil {
		return err
	}
	kv, err := m.st.Get(r.Context(), keyHead)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("manager: read head: %w", err)
	}
	out := api.RevisionList{Items: []api.Revision{}, Head: kv.ModRev}
	if kv.ModRev == 0 {
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	head, err := revisions.Decode(kv)
	if err != nil {
		return err
	}
	if err := m.revisions.WaitRev(r.Context(), kv.ModRev); err != nil {
		return err
	}
	seq := head.Seq
	if s := r.URL.Query().Get("cursor"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 || n > seq {
			return fault.New(fault.BadRequest, nil, "cursor: %q: pass the next of the page before, unchanged", s)
		}
		seq = n
	}
	for ; seq >= 1 && len(out.Items) < limit; seq-- {
		if rec, ok := m.tab.revs.Get(revisions.Key(seq)); ok {
			out.Items = append(out.Items, rec.API())
		}
	}
	if seq >= 1 {
		out.Next = strconv.FormatInt(seq, 10)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// pageLimit reads ?limit=.
func pageLimit(r *http.Request) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return defaultPage, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxPage {
		return 0, fault.New(fault.BadRequest, nil, "limit: %q: want 1 to %d", s, maxPage)
	}
	return n, nil
}

func revParam(s, name string) (int64, error) {
	rev, err := strconv.ParseInt(s, 10, 64)
	if err != nil || rev < 0 {
		return 0, fault.New(fault.BadRequest, nil, "%s: %q: want a revision number (GET /v1/revisions lists them)", name, s)
	}
	return rev, nil
}

// getRevision answers the objects in force at a revision.
func (m *Manager) getRevision(w http.ResponseWriter, r *http.Request, _ principal) error {
	rev, err := revParam(r.PathValue("rev"), "rev")
	if err != nil {
		return err
	}
	rec, err := m.record(r.Context(), rev)
	if err != nil {
		return err
	}
	ps, err := m.history.Load(r.Context(), rec)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.ObjectList{Revision: rev, Items: objectsOf(ps, kindFilter(r.URL.Query().Get("kind")))})
	return nil
}

// getDiff lists the objects that differ between two revisions (?from=,
// ?to=; to defaults to the head, from to to's parent).
func (m *Manager) getDiff(w http.ResponseWriter, r *http.Request, _ principal) error {
	ctx := r.Context()
	q := r.URL.Query()
	headKV, head, err := m.head(ctx)
	if err != nil {
		return err
	}
	to, toState := headKV.ModRev, head
	if s := q.Get("to"); s != "" {
		if to, err = revParam(s, "to"); err != nil {
			return err
		}
		rec, err := m.record(ctx, to)
		if err != nil {
			return err
		}
		if toState, err = m.history.Load(ctx, rec); err != nil {
			return err
		}
	}
	var from int64
	if toState.Record != nil {
		from = toState.Record.ParentRev
	}
	if s := q.Get("from"); s != "" {
		if from, err = revParam(s, "from"); err != nil {
			return err
		}
	}
	rec, err := m.record(ctx, from)
	if err != nil {
		return err
	}
	fromState, err := m.history.Load(ctx, rec)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.RevisionDiff{From: from, To: to, Changes: revisions.Diff(fromState, toState)})
	return nil
}

// postRollback makes the objects of an earlier revision the head again,
// as a new revision, validated and proven like any apply.
func (m *Manager) postRollback(w http.ResponseWriter, r *http.Request, p principal) error {
	rev, err := revParam(r.PathValue("rev"), "rev")
	if err != nil {
		return err
	}
	var req api.RollbackRequest
	if err := m.decodeOptional(w, r, &req); err != nil {
		return err
	}
	wait, err := waitParam(r, req.Wait)
	if err != nil {
		return err
	}
	rec, err := m.record(r.Context(), rev)
	if err != nil {
		return err
	}
	target, err := m.history.Load(r.Context(), rec)
	if err != nil {
		return err
	}
	res, err := m.change(r.Context(), p, "policy.rollback", req.Message, false, func(*revisions.State) (proposal, error) {
		return proposal{objects: target.Objects}, nil
	}, rev)
	if err != nil {
		return err
	}
	m.finish(w, r, res, wait)
	return nil
}
