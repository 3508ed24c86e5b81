package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
)

// SyncRequest is one change of the object set as a manager's feed brings
// it: objects put and deleted, or, with Replace, the whole set.
type SyncRequest struct {
	// Objects are objects to add or update, decoded from the canonical
	// form the manager validated and proved (objects.Stored).
	Objects []*objects.Object
	// Documents hold more objects to add or update, as text.
	Documents []api.Document
	// Deleted names objects to remove; a name not held is not an error.
	Deleted []api.ObjectRef
	// Replace makes the objects of Documents the whole set: every other
	// object is removed.
	Replace bool
}

// Sync makes one change of the object set — validated whole, compiled and
// enforced by one dataplane Apply — so that a managed agent never
// enforces an empty or partial set, not even during a full resync. It is
// how internal/agent/feed follows a manager. Nothing changes when
// anything is wrong; the error is an *Error.
func (a *Agent) Sync(ctx context.Context, req SyncRequest) (api.ApplyResult, error) {
	start := time.Now()
	var (
		objs    []*object
		details []string
		seen    = map[api.ObjectRef]bool{}
		pool    = labelPool{}
	)
	for _, o := range req.Objects {
		if seen[o.Ref] {
			details = append(details, fmt.Sprintf("%s is given twice; give each object once", refString(o.Ref)))
			continue
		}
		seen[o.Ref] = true
		// Stored for a restart as its canonical form, the form the
		// manager validated: the text it reads back from is that.
		d := &document{name: "manager: " + refString(o.Ref), data: string(o.Canon), seq: a.docSeq.Add(1)}
		pool.shareSet(o.Set)
		objs = append(objs, newObject(d, o))
	}
	for _, d := range req.Documents {
		parsed, errs := parseDocument(&document{name: d.Name, data: d.Data, seq: a.docSeq.Add(1)})
		errs.Err() // sorts by position
		for _, e := range errs {
			details = append(details, e.Error())
		}
		for _, o := range parsed {
			if seen[o.ref] {
				details = append(details, fmt.Sprintf("%s: %s is given twice; give each object once", d.Name, refString(o.ref)))
				continue
			}
			seen[o.ref] = true
			objs = append(objs, o)
		}
	}
	if len(details) > 0 {
		return api.ApplyResult{}, newError(fault.Invalid, details, "agent: sync refused: the documents do not read")
	}
	r, err := a.send(ctx, &request{op: opSync, start: start, objs: objs, deleted: req.Deleted, replace: req.Replace})
	return r.result, err
}

// Changed returns a channel that is closed at the next change of the
// state in force (objects or registered workloads).
func (a *Agent) Changed() <-chan struct{} { return a.changed.wait() }

// changeNotifier wakes everyone waiting for the next change.
type changeNotifier struct {
	mu sync.Mutex
	ch chan struct{} // nil until someone waits
}

func (n *changeNotifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *changeNotifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}
