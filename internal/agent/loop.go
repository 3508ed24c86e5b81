package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"runtime"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
)

type opKind int

const (
	opApply opKind = iota
	opDelete
	opRegister
	opUnregister
	opSync
)

func (o opKind) String() string {
	return [...]string{"apply", "delete", "register", "unregister", "sync"}[o]
}

// request is one change for the loop to make.
type request struct {
	ctx    context.Context
	op     opKind
	start  time.Time
	objs   []*object // apply, delete, sync
	dryRun bool
	reg    *registration // register
	key    string        // unregister
	done   chan reply    // buffered: the loop never blocks on it

	deleted []api.ObjectRef // sync: objects to remove
	replace bool            // sync: objs are the whole set
}

type reply struct {
	result api.ApplyResult
	err    error
}

// loopState is the desired state, owned by the loop goroutine alone.
type loopState struct {
	rev     int64
	objects map[api.ObjectRef]*object
	objList []*object   // objects, sorted by name
	objSet  *policy.Set // the objects' set, without registrations
	regs    map[string]*registration
	regList []*registration        // regs, sorted by key
	attach  []dataplane.Attachment // regList's attachments; never changed in place
	comp    *compile.Compiler
	state   *compile.State // in force
}

// snapshot is what readers see: immutable, replaced after every change.
type snapshot struct {
	rev     int64
	objects []*object
	regs    []*registration
	set     *policy.Set
	state   *compile.State

	once   sync.Once
	engine *policy.Engine
	err    error
}

func (s *snapshot) policyEngine() (*policy.Engine, error) {
	s.once.Do(func() { s.engine, s.err = policy.NewEngine(s.set) })
	return s.engine, s.err
}

// objects reports whether the request changes objects (else workloads).
func (o opKind) objects() bool { return o == opApply || o == opDelete || o == opSync }

// maxBatch bounds how many workload changes share one dataplane Apply.
const maxBatch = 64

// loop is the one goroutine that changes the desired state. Workload
// registrations that queue up while an Apply runs are applied together.
func (a *Agent) loop() {
	defer close(a.loopDone)
	var next *request
	for {
		r := next
		next = nil
		if r == nil {
			select {
			case r = <-a.reqs:
			case <-a.quit:
				return
			}
		}
		if r.op.objects() {
			r.done <- a.objectsChange(r)
			a.compactIfDue()
			continue
		}
		batch := []*request{r}
	drain:
		for len(batch) < maxBatch {
			select {
			case q := <-a.reqs:
				if q.op.objects() {
					next = q
					break drain
				}
				batch = append(batch, q)
			default:
				break drain
			}
		}
		a.workloadsChange(batch)
	}
}

// objectsChange applies or deletes objects: the whole resulting set is
// validated and its walls proven before anything changes.
func (a *Agent) objectsChange(r *request) reply {
	if err := r.ctx.Err(); err != nil {
		return reply{err: err}
	}
	l := &a.l
	next, res := a.plan(r)
	if len(res.Created)+len(res.Updated)+len(res.Deleted) == 0 {
		res.EnforcedMicros = time.Since(r.start).Microseconds()
		return reply{result: res}
	}
	tv := time.Now()
	nextList := changedList(l.objList, next, res)
	objSet := changedSet(l.objSet, next, nextList, res)
	full := withWorkloads(objSet, l.regList)
	if !policiesStillValid(next, res, objSet) {
		if err := validate(r.op, full); err != nil {
			return reply{err: err}
		}
	}
	if r.dryRun {
		return reply{result: res}
	}
	t0 := time.Now()
	if err := l.comp.SetPolicies(full); err != nil {
		return reply{err: newError(fault.Invalid, details(err), "agent: %s refused: the policy set does not compile", r.op)}
	}
	st := l.comp.State()
	t1 := time.Now()
	// A change the loop has started is finished even if its caller gives
	// up: the outcome must not depend on when a client disconnects.
	if err := a.dp.Apply(context.WithoutCancel(r.ctx), a.desired(st, full, l.attach)); err != nil {
		a.recompile()
		return reply{err: newError(fault.Unavailable, nil, "agent: %s: the dataplane refused the change, which is not in force: %w", r.op, err)}
	}
	t2 := time.Now()
	rec := changeRecord(l.rev+1, next, res)
	if err := a.state.appendRecord(rec, func() objectsState { return encodeObjects(l.rev+1, nextList) }); err != nil {
		a.revert()
		return reply{err: newError(fault.Internal, nil, "%v; the change was rolled back", err)}
	}
	l.rev++
	l.objects, l.objList, l.objSet, l.state = next.commit(), nextList, objSet, st
	a.publish(full)
	res.Revision = l.rev
	res.EnforcedMicros = t2.Sub(r.start).Microseconds()
	a.log.Info("objects changed", "op", r.op.String(), "revision", l.rev, "created", len(res.Created), "updated", len(res.Updated),
		"deleted", len(res.Deleted), "read", tv.Sub(r.start), "validate", t0.Sub(tv), "compile", t1.Sub(t0), "dataplane", t2.Sub(t1), "enforced", t2.Sub(r.start))
	return reply{result: res}
}

// compactIfDue folds the journal into objects.json once it has outgrown
// it, after the change was answered; a failure leaves the journal, which
// still holds every change, and is tried again after the next change.
func (a *Agent) compactIfDue() {
	if !a.state.compactDue() {
		return
	}
	t0 := time.Now()
	if err := a.state.compact(encodeObjects(a.l.rev, a.l.objList)); err != nil {
		a.log.Error("compact the state dir", "err", err)
		return
	}
	a.log.Info("state compacted", "revision", a.l.rev, "bytes", a.state.snapshotSize, "took", time.Since(t0))
}

// plan computes the object set a request makes, and what it changes.
func (a *Agent) plan(r *request) (*objectsAfter, api.ApplyResult) {
	l := &a.l
	next := newObjectsAfter(l.objects)
	res := api.ApplyResult{Revision: l.rev}
	deleted := r.deleted
	if r.replace {
		keep := map[api.ObjectRef]bool{}
		for _, o := range r.objs {
			keep[o.ref] = true
		}
		for ref := range l.objects {
			if !keep[ref] {
				deleted = append(deleted, ref)
			}
		}
	}
	for _, ref := range deleted {
		if _, ok := next.get(ref); ok {
			next.delete(ref)
			res.Deleted = append(res.Deleted, ref)
		} else {
			res.NotFound = append(res.NotFound, ref)
		}
	}
	for _, o := range r.objs {
		old, ok := next.get(o.ref)
		switch {
		case r.op == opDelete && ok:
			next.delete(o.ref)
			res.Deleted = append(res.Deleted, o.ref)
		case r.op == opDelete:
			res.NotFound = append(res.NotFound, o.ref)
		case !ok:
			next.set(o)
			res.Created = append(res.Created, o.ref)
		case old.hash == o.hash:
			res.Unchanged = append(res.Unchanged, o.ref)
		default:
			next.set(o)
			res.Updated = append(res.Updated, o.ref)
		}
	}
	for _, refs := range [][]api.ObjectRef{res.Created, res.Updated, res.Unchanged, res.Deleted, res.NotFound} {
		sortRefs(refs)
	}
	return next, res
}

// validate checks the whole set as `bulkhead check` does: every reference
// and name, then every wall. A manager's revision (opSync) is not proven
// again: the manager proved its walls, over every workload it knows, once
// for all its hosts; the agent still refuses a set it cannot enforce.
func validate(op opKind, full *policy.Set) error {
	if err := policy.Validate(full); err != nil {
		return newError(fault.Invalid, details(err), "agent: %s refused: the resulting policy set is invalid", op)
	}
	if op == opSync {
		return nil
	}
	breaches, err := policy.ProveWalls(full)
	if err != nil {
		return newError(fault.Invalid, details(err), "agent: %s refused: the resulting policy set is invalid", op)
	}
	if len(breaches) > 0 {
		var d []string
		for _, b := range breaches {
			d = append(d, b.String())
		}
		return newError(fault.Conflict, d, "agent: %s refused: %d wall breaches; nothing was changed", op, len(breaches))
	}
	return nil
}

// policiesStillValid says whether a change that creates, updates or
// deletes policies only leaves the set in force valid without checking it
// whole: names are unique by construction (objects are stored by kind,
// namespace and name), nothing refers to a policy, and without walls
// there is nothing to prove, so only the segments the changed policies
// name must exist. Any other change, or a missing segment, is checked
// whole by validate, which also words the errors.
func policiesStillValid(next *objectsAfter, res api.ApplyResult, objSet *policy.Set) bool {
	if len(objSet.Walls) > 0 || !policiesOnly(res) {
		return false
	}
	segment := func(name string) bool {
		_, ok := next.get(api.ObjectRef{Kind: "Segment", Name: name})
		return ok
	}
	for _, refs := range [][]api.ObjectRef{res.Created, res.Updated} {
		for _, ref := range refs {
			o, _ := next.get(ref)
			p := o.policy()
			if p.Subject.Segment != "" && !segment(p.Subject.Segment) {
				return false
			}
			for _, d := range []policy.Direction{policy.Ingress, policy.Egress} {
				for _, rule := range p.Rules(d) {
					for _, peer := range rule.Peers {
						if peer.Segment != "" && !segment(peer.Segment) {
							return false
						}
					}
				}
			}
		}
	}
	return true
}

func details(err error) []string {
	var errs source.Errors
	if errors.As(err, &errs) {
		out := make([]string, len(errs))
		for i, e := range errs {
			out[i] = e.Error()
		}
		return out
	}
	return []string{err.Error()}
}

// workloadsChange registers and unregisters workloads incrementally, with
// one dataplane Apply for the whole batch.
func (a *Agent) workloadsChange(batch []*request) {
	l := &a.l
	regs := maps.Clone(l.regs)
	var (
		done    []*request
		undo    []func()
		changed bool
	)
	for _, r := range batch {
		undoOne, err := a.stage(r, regs)
		switch {
		case err != nil:
			r.done <- reply{err: err}
			continue
		case undoOne != nil:
			undo = append(undo, undoOne)
			changed = true
		}
		done = append(done, r)
	}
	answer := func(err error) {
		for _, r := range done {
			r.done <- reply{result: api.ApplyResult{Revision: l.rev, EnforcedMicros: time.Since(r.start).Microseconds()}, err: err}
		}
	}
	if !changed {
		answer(nil)
		return
	}
	rollback := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	st := l.comp.State()
	list := sortedRegistrations(regs)
	full := withWorkloads(l.objSet, list)
	t0 := time.Now()
	attach := attachments(list)
	if err := a.dp.Apply(context.Background(), a.desired(st, full, attach)); err != nil {
		rollback()
		answer(newError(fault.Unavailable, nil, "agent: the dataplane refused the workload change, which is not in force: %w", err))
		return
	}
	t1 := time.Now()
	if err := a.state.write(workloadsFile, encodeWorkloads(l.rev+1, list)); err != nil {
		rollback()
		a.reapply()
		answer(newError(fault.Internal, nil, "%v; the change was rolled back", err))
		return
	}
	l.rev++
	l.regs, l.regList, l.attach, l.state = regs, list, attach, st
	a.publish(full)
	answer(nil)
	a.log.Debug("workloads changed", "revision", l.rev, "requests", len(done), "workloads", len(regs), "dataplane", t1.Sub(t0))
}

// stage makes one registration or unregistration in regs and in the
// compiler, and returns how to undo it (nil: nothing changed).
func (a *Agent) stage(r *request, regs map[string]*registration) (func(), error) {
	l := &a.l
	if err := r.ctx.Err(); err != nil {
		return nil, err
	}
	if r.op == opUnregister {
		old, ok := regs[r.key]
		if !ok {
			return nil, nil
		}
		l.comp.DeleteWorkload(r.key)
		delete(regs, r.key)
		return func() { l.comp.UpsertWorkload(old.w) }, nil
	}
	key := r.reg.key
	ref := api.ObjectRef{Kind: "Workload", Namespace: r.reg.w.Namespace, Name: r.reg.w.Name}
	if o, ok := l.objects[ref]; ok {
		return nil, newError(fault.Conflict, nil, "agent: register workload %s: an applied Workload object has that name (%s); delete it or register under another name", key, o.workload().Pos)
	}
	old := regs[key]
	if old != nil && sameRegistration(old.api, r.reg.api) {
		return nil, nil
	}
	if err := l.comp.UpsertWorkload(r.reg.w); err != nil {
		return nil, newError(fault.Conflict, nil, "agent: register workload %s: %v", key, err)
	}
	regs[key] = r.reg
	if old != nil {
		return func() { l.comp.UpsertWorkload(old.w) }, nil
	}
	return func() { l.comp.DeleteWorkload(key) }, nil
}

// desired is what the dataplane must enforce.
func (a *Agent) desired(st *compile.State, full *policy.Set, attach []dataplane.Attachment) dataplane.Desired {
	return dataplane.Desired{State: st, Set: full, Attachments: attach}
}

// attachments are the interfaces of the registrations, for the dataplane.
func attachments(regs []*registration) []dataplane.Attachment {
	out := make([]dataplane.Attachment, 0, len(regs))
	for _, r := range regs {
		out = append(out, r.attachment())
	}
	return out
}

// withWorkloads is the objects' set with the registered workloads added;
// it shares everything but the workload list with objSet.
func withWorkloads(objSet *policy.Set, regs []*registration) *policy.Set {
	full := *objSet
	full.Workloads = make([]*policy.Workload, 0, len(objSet.Workloads)+len(regs))
	full.Workloads = append(full.Workloads, objSet.Workloads...)
	for _, r := range regs {
		full.Workloads = append(full.Workloads, r.w)
	}
	return &full
}

// recompile rebuilds the compiler from the state in force, after a change
// the dataplane refused (the compiler had already taken it).
func (a *Agent) recompile() {
	l := &a.l
	c, err := compile.NewShared(withWorkloads(l.objSet, l.regList), a.host, l.state)
	if err != nil {
		// It compiled before; failing now is a bug. Keep serving the
		// state in force and say so.
		a.log.Error("recompile the state in force", "err", err)
		return
	}
	l.comp = c
}

// revert puts the state in force back into the compiler and the
// dataplane after a change the state dir could not record.
func (a *Agent) revert() {
	a.recompile()
	a.reapply()
}

func (a *Agent) reapply() {
	l := &a.l
	l.state = l.comp.State()
	if err := a.dp.Apply(context.Background(), a.desired(l.state, withWorkloads(l.objSet, l.regList), l.attach)); err != nil {
		a.log.Error("restore the state in force after a failed write", "err", err)
	}
}

// publish makes the loop's state the one readers see.
func (a *Agent) publish(full *policy.Set) {
	l := &a.l
	a.snap.Store(&snapshot{rev: l.rev, objects: l.objList, regs: l.regList, set: full, state: l.state})
	a.changed.notify()
}

func encodeWorkloads(rev int64, regs []*registration) workloadsState {
	st := workloadsState{Format: stateFormat, Revision: rev, Workloads: make([]api.WorkloadRegistration, 0, len(regs))}
	for _, r := range regs {
		st.Workloads = append(st.Workloads, r.api)
	}
	return st
}

// restore loads the state dir and makes the dataplane enforce it.
func (a *Agent) restore(ctx context.Context) error {
	l := &a.l
	var objs objectsState
	found, err := a.state.read(objectsFile, &objs)
	if err != nil {
		return err
	}
	recs, journalSize, err := a.state.readJournal()
	if err != nil {
		return err
	}
	seq := int64(math.MinInt64 / 2) // before every document applied from now on
	l.objects = map[api.ObjectRef]*object{}
	if found {
		if l.objects, err = decodeObjects(a.state.path(objectsFile), objs, &seq); err != nil {
			return err
		}
	}
	objRev, err := replay(a.state.path(journalFile), l.objects, recs, objs.Revision, &seq)
	if err != nil {
		return err
	}
	var ws workloadsState
	wfound, err := a.state.read(workloadsFile, &ws)
	if err != nil {
		return err
	}
	l.regs = map[string]*registration{}
	if wfound {
		if l.regs, err = decodeWorkloads(a.state.path(workloadsFile), ws, a.host); err != nil {
			return err
		}
	}
	l.rev = max(objRev, ws.Revision)
	l.objList, l.regList = sortedObjects(l.objects), sortedRegistrations(l.regs)
	l.attach = attachments(l.regList)
	l.objSet = objectSet(l.objList)
	full := withWorkloads(l.objSet, l.regList)
	if err := policy.Validate(full); err != nil {
		return fmt.Errorf("agent: the state in %s does not validate: %w", a.state.dir, err)
	}
	if l.comp, err = compile.NewShared(full, a.host, nil); err != nil {
		return fmt.Errorf("agent: compile the state in %s: %w", a.state.dir, err)
	}
	l.state = l.comp.State()
	t0 := time.Now()
	if err := a.dp.Apply(ctx, a.desired(l.state, full, l.attach)); err != nil {
		return fmt.Errorf("agent: enforce the state in %s: %w", a.state.dir, err)
	}
	if journalSize > 0 {
		// Start with an empty journal: fold it in, and drop a cut-short tail.
		if err := a.state.compact(encodeObjects(l.rev, l.objList)); err != nil {
			return err
		}
	}
	a.log.Info("state restored", "revision", l.rev, "objects", len(l.objects), "workloads", len(l.regs), "dataplane", time.Since(t0))
	a.publish(full)
	return nil
}

func decodeWorkloads(path string, st workloadsState, host string) (map[string]*registration, error) {
	if st.Format != stateFormat {
		return nil, corrupt(path, fmt.Errorf("format %d, this agent reads format %d", st.Format, stateFormat))
	}
	regs := map[string]*registration{}
	for i, r := range st.Workloads {
		w, errs := workload(r, host)
		if len(errs) > 0 {
			return nil, corrupt(path, fmt.Errorf("workload %d (%s/%s): %s", i, r.Namespace, r.Name, errs[0]))
		}
		if _, dup := regs[w.Key()]; dup {
			return nil, corrupt(path, fmt.Errorf("workload %s is listed twice", w.Key()))
		}
		regs[w.Key()] = &registration{api: r, w: w, key: w.Key()}
	}
	return regs, nil
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
