package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/escalations"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// The handlers of the escalations concern (internal/manager/escalations):
// agents ask, operators answer, everyone with a role reads.

// newEscalations makes the concern over this manager's revisions and
// audit log.
func (m *Manager) newEscalations() (*escalations.Service, error) {
	rules := &decisionRules{m: m}
	return escalations.New(escalations.Config{Rules: rules, Audit: m.auditLog, Inventory: escInventory{m},
		Classes: rules, Bindings: m.bindings, Now: m.cfg.Now, Logger: m.log})
}

// escInventory vouches for the ends of an escalation from the workloads
// the hosts reported.
type escInventory struct{ m *Manager }

func (i escInventory) Owner(a netip.Addr) (api.HostWorkload, bool) {
	w := i.m.inv.Owner(a)
	if w == nil {
		return api.HostWorkload{}, false
	}
	return *w, true
}

// decisionRules reads the DecisionRules and the ConflictClasses of the
// head revision, decoding them again only when the head moved.
type decisionRules struct {
	m     *Manager
	mu    sync.Mutex
	rev   int64
	set   *policy.Set
	read  bool
	eng   *policy.Engine // of set, for segment membership; made when first asked
	engOK bool
}

// current returns the head revision's set, and its engine when withEngine.
func (d *decisionRules) current(ctx context.Context, withEngine bool) (int64, *policy.Set, *policy.Engine, error) {
	_, ps, err := d.m.head(ctx)
	if err != nil {
		return 0, nil, nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.read || ps.Rev() != d.rev {
		set, err := d.m.decodedSet(ps)
		if err != nil {
			return 0, nil, nil, err
		}
		d.rev, d.set, d.read, d.eng, d.engOK = ps.Rev(), set, true, nil, false
	}
	if withEngine && !d.engOK {
		eng, err := policy.NewEngine(d.set)
		if err != nil {
			return 0, nil, nil, fmt.Errorf("manager: the objects of revision %d: %w", d.rev, err)
		}
		d.eng, d.engOK = eng, true
	}
	return d.rev, d.set, d.eng, nil
}

func (d *decisionRules) DecisionRules(ctx context.Context) (int64, []*policy.DecisionRule, error) {
	rev, set, _, err := d.current(ctx, false)
	if err != nil {
		return 0, nil, err
	}
	return rev, set.DecisionRules, nil
}

// Access finds conflict class name in the head revision and the dataset
// whose segment holds dst, by the policy model's segment membership (as
// the compiler and the wall proof decide it); the ends' namespaces and
// labels are the inventory's, as the escalation path vouched for them.
func (d *decisionRules) Access(ctx context.Context, name string, src, dst api.EscalationEndpoint) (escalations.ClassAccess, error) {
	rev, set, eng, err := d.current(ctx, true)
	if err != nil {
		return escalations.ClassAccess{}, err
	}
	var class *policy.ConflictClass
	for _, c := range set.ConflictClasses {
		if c.Name == name {
			class = c
		}
	}
	if class == nil {
		return escalations.ClassAccess{}, fault.New(fault.NotFound, nil, "revision %d holds no conflict class %s", rev, name)
	}
	from, to := policyEndpoint(src), policyEndpoint(dst)
	out := escalations.ClassAccess{Class: class, Subject: from.Workload != nil && (class.Subjects == "" || eng.InSegment(class.Subjects, from))}
	for _, ds := range class.Datasets {
		if eng.InSegment(ds.Segment, to) {
			out.Dataset = ds.Name
			break
		}
	}
	return out, nil
}

// policyEndpoint is an escalation's end as the policy model sees it.
func policyEndpoint(e api.EscalationEndpoint) policy.Endpoint {
	a, _ := netip.ParseAddr(e.Address) // the escalation path checked it
	ep := policy.Endpoint{Addr: a.Unmap()}
	if e.Name != "" {
		ep.Workload = &policy.Workload{Namespace: e.Namespace, Name: e.Name, Labels: e.Labels, IPs: []netip.Addr{ep.Addr}, Host: e.Host}
	}
	return ep
}

// postEscalation is an agent asking about a held connection; it answers
// once the connection is decided, by the request's deadline at the latest.
func (m *Manager) postEscalation(w http.ResponseWriter, r *http.Request, p principal) error {
	var req api.EscalationRequest
	if err := m.decode(w, r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	if !req.Deadline.IsZero() {
		var cancel context.CancelFunc
		// A little past the deadline: the hold's own timer answers first.
		ctx, cancel = context.WithDeadline(ctx, req.Deadline.Add(time.Second))
		defer cancel()
	}
	d, err := m.esc.Ask(ctx, p.name, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, d)
	return nil
}

// getEscalations lists the escalations, the newest first (?state=held
// for those waiting for an operator), or with ?follow=1 streams them as
// JSON lines: the current ones, oldest first, then every change.
func (m *Manager) getEscalations(w http.ResponseWriter, r *http.Request, p principal) error {
	q := r.URL.Query()
	state := q.Get("state")
	if state != "" && state != api.EscalationHeld && state != api.EscalationDecided {
		return fault.New(fault.BadRequest, nil, "state: %q; valid: held, decided", state)
	}
	keep := func(e api.Escalation) bool { return state == "" || e.State == state }
	switch q.Get("follow") {
	case "", "0", "false":
	case "1", "true":
		return m.followEscalations(w, r, p, keep)
	default:
		return fault.New(fault.BadRequest, nil, "follow: %q; valid: 1 or 0", q.Get("follow"))
	}
	out := api.EscalationList{Items: []api.Escalation{}}
	for _, e := range m.esc.List() {
		if keep(e) {
			out.Items = append(out.Items, e)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (m *Manager) followEscalations(w http.ResponseWriter, r *http.Request, p principal, keep func(api.Escalation) bool) error {
	changes, stop := m.esc.Follow()
	defer stop()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	cur := m.esc.List()
	for i := len(cur) - 1; i >= 0; i-- {
		if keep(cur[i]) && enc.Encode(cur[i]) != nil {
			return nil
		}
	}
	if rc.Flush() != nil {
		return nil
	}
	tick := time.NewTicker(m.cfg.Heartbeat)
	defer tick.Stop()
	for {
		select {
		case e, ok := <-changes:
			if !ok {
				return nil // too far behind: the client follows again
			}
			if keep(e) && (enc.Encode(e) != nil || rc.Flush() != nil) {
				return nil
			}
		case <-tick.C:
			if m.stillValid(p) != nil {
				return nil
			}
			// An empty line keeps a quiet stream open; readers skip it.
			if _, err := w.Write([]byte("\n")); err != nil || rc.Flush() != nil {
				return nil
			}
		case <-r.Context().Done():
			return nil
		}
	}
}

func (m *Manager) postEscalationAnswer(approve bool) func(http.ResponseWriter, *http.Request, principal) error {
	return func(w http.ResponseWriter, r *http.Request, p principal) error {
		var a api.EscalationAnswer
		if err := m.decodeOptional(w, r, &a); err != nil {
			return err
		}
		answer := m.esc.Deny
		if approve {
			answer = m.esc.Approve
		}
		rec, err := answer(r.Context(), r.PathValue("id"), p.actor(), p.String(), a.Reason)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, rec)
		return nil
	}
}
