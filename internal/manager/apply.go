package manager

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/revisions"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
)

// MaxWait bounds ?wait=.
const MaxWait = 10 * time.Minute

func (m *Manager) postApply(w http.ResponseWriter, r *http.Request, p principal) error {
	return m.applyDocuments(w, r, p, false)
}

func (m *Manager) postDelete(w http.ResponseWriter, r *http.Request, p principal) error {
	return m.applyDocuments(w, r, p, true)
}

func (m *Manager) applyDocuments(w http.ResponseWriter, r *http.Request, p principal, del bool) error {
	var req api.ManagerApplyRequest
	if err := m.decode(w, r, &req); err != nil {
		return err
	}
	wait, err := waitParam(r, req.Wait)
	if err != nil {
		return err
	}
	if len(req.Documents) == 0 {
		return fault.New(fault.BadRequest, nil, "documents: at least one document is required")
	}
	var docs []parsedDoc
	var errs source.Errors
	seen := map[string]bool{}
	for i, d := range req.Documents {
		if d.Name == "" {
			req.Documents[i].Name = fmt.Sprintf("documents[%d]", i)
		}
		pd, derrs := parseDocument(req.Documents[i], del)
		errs = append(errs, derrs...)
		for _, o := range pd.objects {
			k := refKey(o.Ref)
			if seen[k] {
				errs.Add(o.Pos, "metadata.name", "%s %s is given twice in this request", o.Ref.Kind, nsName(o.Ref))
			}
			seen[k] = true
		}
		docs = append(docs, pd)
	}
	if err := errs.Err(); err != nil {
		return fault.New(fault.Invalid, fault.Details(err), "the documents are invalid; nothing was applied")
	}
	action := "policy.apply"
	if del {
		action = "policy.delete"
	}
	res, err := m.change(r.Context(), p, action, req.Message, req.DryRun, func(cur *revisions.State) (proposal, error) {
		return nextObjects(cur, docs, del)
	}, 0)
	if err != nil {
		return err
	}
	m.finish(w, r, res, wait)
	return nil
}

// proposal is the objects a change would leave in force.
type proposal struct {
	objects map[string]revisions.Object
	reqSet  *policy.Set     // the request's documents as load read them, with the user's positions
	fromReq map[string]bool // the objects reqSet holds
}

// nextObjects computes the objects after a request.
func nextObjects(cur *revisions.State, docs []parsedDoc, del bool) (proposal, error) {
	next := make(map[string]revisions.Object, len(cur.Objects))
	for k, o := range cur.Objects {
		next[k] = o
	}
	reqSet, fromReq := &policy.Set{}, map[string]bool{}
	var missing []string
	for _, d := range docs {
		for _, o := range d.objects {
			k := refKey(o.Ref)
			if del {
				if _, ok := next[k]; !ok {
					missing = append(missing, o.Ref.Kind+" "+nsName(o.Ref))
				}
				delete(next, k)
				continue
			}
			next[k] = o
			fromReq[k] = true
		}
		if d.set != nil {
			reqSet.Merge(d.set)
		}
	}
	if len(missing) > 0 {
		return proposal{}, fault.New(fault.NotFound, missing, "cannot delete what does not exist; nothing was deleted")
	}
	return proposal{objects: next, reqSet: reqSet, fromReq: fromReq}, nil
}

func nsName(r api.ObjectRef) string {
	if r.Namespace == "" {
		return r.Name
	}
	return r.Namespace + "/" + r.Name
}

// changeDeadline bounds how long a change that keeps losing the head's
// compare-and-set to other managers tries again before it answers 409.
// It counts from the first loss: time spent waiting on the store before
// it is contention (a stalled store fails each call on its own bound).
const changeDeadline = 30 * time.Second

// change is one policy change: compute the next objects from the head,
// validate the whole resulting set, prove the walls, commit as one
// revision, and try again from the new head if another change won. This
// manager's changes take turns (applyMu); another manager's can win the
// head, and then this one tries again after a jittered backoff, for at
// most changeDeadline: each loss means that another change committed, so
// under any contention that ends, every change lands.
func (m *Manager) change(ctx context.Context, p principal, action, message string, dryRun bool,
	next func(*revisions.State) (proposal, error), rollbackOf int64) (api.ManagerApplyResult, error) {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	var firstLoss time.Time
	for attempt := 0; ; attempt++ {
		base, cur, err := m.head(ctx)
		if err != nil {
			return api.ManagerApplyResult{}, err
		}
		prop, err := next(cur)
		if err != nil {
			return api.ManagerApplyResult{}, err
		}
		objects := prop.objects
		res := revisions.Compare(cur.Objects, objects)
		if prop.fromReq != nil {
			res.Unchanged = onlyFrom(res.Unchanged, prop.fromReq)
		}
		if len(res.Created)+len(res.Updated)+len(res.Deleted) == 0 {
			return res, nil
		}
		if err := m.validate(prop); err != nil {
			return api.ManagerApplyResult{}, err
		}
		c := change{actor: p, action: action, message: message, rollbackOf: rollbackOf, detail: changeDetail(res, rollbackOf)}
		if err := m.fits(cur, objects, c); err != nil {
			return api.ManagerApplyResult{}, err
		}
		if dryRun {
			return res, nil
		}
		rev, ok, err := m.commit(ctx, base, cur, objects, c)
		if err != nil {
			return api.ManagerApplyResult{}, err
		}
		if ok {
			res.Revision = rev
			// Decode the new objects for the next change while nobody waits.
			go m.prewarm(objects)
			// Answer once this manager's own reads show the revision.
			if err := m.feed.WaitRev(ctx, rev); err != nil {
				return res, err
			}
			return res, m.revisions.WaitRev(ctx, rev)
		}
		if firstLoss.IsZero() {
			firstLoss = m.now()
		} else if lost := m.now().Sub(firstLoss); lost > changeDeadline {
			return api.ManagerApplyResult{}, fault.New(fault.Conflict, nil, "other managers' changes kept winning for %s (%d attempts lost); nothing was applied; try again",
				lost.Round(time.Second), attempt+1)
		}
		m.log.Info("the head moved during a change; trying again", "action", action, "attempt", attempt+1)
		sleep(ctx, jitter(attempt))
		if err := ctx.Err(); err != nil {
			return api.ManagerApplyResult{}, err
		}
	}
}

// onlyFrom keeps the refs a request named.
func onlyFrom(refs []api.ObjectRef, named map[string]bool) []api.ObjectRef {
	out := refs[:0]
	for _, r := range refs {
		if named[refKey(r)] {
			out = append(out, r)
		}
	}
	return out
}

func changeDetail(res api.ManagerApplyResult, rollbackOf int64) map[string]any {
	names := func(refs []api.ObjectRef) []string {
		out := make([]string, len(refs))
		for i, r := range refs {
			out[i] = r.Kind + " " + nsName(r)
		}
		return out
	}
	d := map[string]any{"created": names(res.Created), "updated": names(res.Updated), "deleted": names(res.Deleted)}
	if rollbackOf != 0 {
		d["rollbackOf"] = rollbackOf
	}
	return d
}

// validate checks the whole resulting set as `bulkhead check` does: every
// object valid, every reference resolved, every wall proven (over the
// reported workloads and representatives). The workloads take part only
// in the proof: each was checked when its agent reported it, and the
// inventory leaves out any whose name or address another holds, so
// validating them again on every apply (100,000 at a cluster's scale)
// could find nothing new.
func (m *Manager) validate(prop proposal) error {
	set := &policy.Set{}
	if prop.reqSet != nil {
		set.Merge(prop.reqSet)
	}
	for k, o := range prop.objects {
		if prop.fromReq[k] {
			continue
		}
		s, err := m.sets.get(o)
		if err != nil {
			return fault.New(fault.Internal, fault.Details(err), "manager: a stored object no longer loads: %w", err)
		}
		set.Merge(s)
	}
	if _, err := policy.NewEngine(set); err != nil {
		return fault.New(fault.Invalid, fault.Details(err), "the resulting policy set is invalid; nothing was applied")
	}
	if len(set.Walls) == 0 {
		return nil
	}
	set.Workloads = m.inv.Workloads(m.log)
	breaches, err := policy.ProveWalls(set)
	if err != nil {
		return fault.New(fault.Invalid, fault.Details(err), "the walls could not be proven; nothing was applied")
	}
	if len(breaches) > 0 {
		details := make([]string, len(breaches))
		for i, b := range breaches {
			details[i] = b.String()
		}
		// A breach makes the set invalid (422), as an invalid reference does.
		return fault.New(fault.Invalid, details, "refused: the resulting policy set breaches %d walls; nothing was applied", len(breaches))
	}
	return nil
}

// finish answers a change, first waiting for the hosts when asked.
func (m *Manager) finish(w http.ResponseWriter, r *http.Request, res api.ManagerApplyResult, wait time.Duration) {
	if wait > 0 && res.Revision > 0 {
		var hosts []string
		for _, h := range m.hostList() {
			hosts = append(hosts, h.Name)
		}
		res.Realized, res.NotRealized = m.waitRealized(r.Context(), res.Revision, hosts, wait)
	}
	status := http.StatusOK
	if res.Revision > 0 {
		status = http.StatusCreated
	}
	writeJSON(w, status, res)
}

func waitParam(r *http.Request, body string) (time.Duration, error) {
	s := r.URL.Query().Get("wait")
	if s == "" {
		s = body
	}
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > MaxWait {
		return 0, fault.New(fault.BadRequest, nil, "wait: %q: want a Go duration up to %s, such as 30s", s, MaxWait)
	}
	return d, nil
}

// setCache keeps the decoded set of each stored object, by hash.
type setCache struct {
	mu sync.Mutex
	m  map[string]*policy.Set
}

func (c *setCache) get(o revisions.Object) (*policy.Set, error) {
	c.mu.Lock()
	s, ok := c.m[o.Hash+refKey(o.Ref)]
	c.mu.Unlock()
	if ok {
		return s, nil
	}
	s, err := decodeStored(o)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) > 200_000 {
		c.m = map[string]*policy.Set{}
	}
	c.m[o.Hash+refKey(o.Ref)] = s
	c.mu.Unlock()
	return s, nil
}

// prewarm decodes objects into the set cache.
func (m *Manager) prewarm(objects map[string]revisions.Object) {
	for _, o := range objects {
		_, _ = m.sets.get(o)
	}
}

// decodedSet is the policy set of a state (without workloads).
func (m *Manager) decodedSet(ps *revisions.State) (*policy.Set, error) {
	set := &policy.Set{}
	for _, o := range ps.Objects {
		s, err := m.sets.get(o)
		if err != nil {
			return nil, err
		}
		set.Merge(s)
	}
	return set, nil
}

// objectsOf returns a state's objects as ObjectList items, sorted, of the
// kinds given (all when none).
func objectsOf(ps *revisions.State, keep func(api.ObjectRef) bool) []map[string]any {
	keys := make([]string, 0, len(ps.Objects))
	for k, o := range ps.Objects {
		if keep == nil || keep(o.Ref) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	out := make([]map[string]any, 0, len(keys))
	for _, k := range keys {
		var v map[string]any
		if err := jsonUnmarshal(ps.Objects[k].JSON, &v); err == nil {
			out = append(out, v)
		}
	}
	return out
}

func kindFilter(kinds string) func(api.ObjectRef) bool {
	if kinds == "" {
		return nil
	}
	want := map[string]bool{}
	for _, k := range strings.Split(kinds, ",") {
		want[strings.ToLower(k)] = true
	}
	return func(r api.ObjectRef) bool { return want[strings.ToLower(r.Kind)] || want[objects.Resource(r.Kind)] }
}
