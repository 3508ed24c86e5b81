package agent

import (
	"encoding/json"
	"slices"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
)

// document is one input file as a client sent it. Objects keep a pointer
// to the document they were read from, so that every later error about
// them cites the file, line and column the user wrote, also after a
// restart: the state dir stores documents whole.
type document struct {
	name, data string
	seq        int64 // orders documents in the state file: first applied first
}

// object is one stored object: its name, the model object it decoded to
// (a Set holding exactly one object) and its canonical form
// (internal/objects), which `get` prints and apply compares to tell an
// update from no change.
type object struct {
	ref   api.ObjectRef
	doc   *document
	set   *policy.Set
	canon []byte
}

func refString(r api.ObjectRef) string { return objects.String(r) }

// parseDocument reads every object of one document with internal/objects,
// the reader `bulkhead check` and the manager use.
func parseDocument(d *document) ([]*object, source.Errors) {
	objs, errs := objects.Read(d.name, []byte(d.data))
	if len(errs) > 0 {
		return nil, errs
	}
	out := make([]*object, len(objs))
	for i, o := range objs {
		out[i] = newObject(d, o)
	}
	return out, nil
}

func newObject(d *document, o *objects.Object) *object {
	return &object{ref: o.Ref, doc: d, set: o.Set, canon: o.Canon}
}

// jsonValue reads canonical JSON as JSON values, for `get`.
func jsonValue(canon []byte) map[string]any {
	var v map[string]any
	if err := json.Unmarshal(canon, &v); err != nil {
		panic("agent: canonical JSON does not read back: " + err.Error())
	}
	return v
}

// objectSet merges the objects, in the order given, into the policy set
// they make.
func objectSet(objs []*object) *policy.Set {
	set := &policy.Set{}
	for _, o := range objs {
		set.Merge(o.set)
	}
	return set
}

func sortedObjects(objs map[api.ObjectRef]*object) []*object {
	out := make([]*object, 0, len(objs))
	for _, o := range objs {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b *object) int { return objects.Compare(a.ref, b.ref) })
	return out
}

// maxPatch is the largest change merged into the sorted lists in force;
// a larger one sorts the whole set again.
const maxPatch = 64

// changedList is the sorted list of next, the object set a change made
// of the one whose sorted list is prev: a copy of prev with the change
// merged in, without going through every object.
func changedList(prev []*object, next map[api.ObjectRef]*object, res api.ApplyResult) []*object {
	if len(res.Created)+len(res.Updated)+len(res.Deleted) > maxPatch {
		return sortedObjects(next)
	}
	var upserted []*object
	for _, refs := range [][]api.ObjectRef{res.Created, res.Updated} {
		for _, ref := range refs {
			upserted = append(upserted, next[ref])
		}
	}
	return patchSorted(prev, func(o *object) api.ObjectRef { return o.ref }, res.Deleted, upserted)
}

// changedSet is the policy set of the objects in nextList, for a change
// of policies alone to the objects whose set is prev: it shares all but
// the list of policies with prev, and that list is patched, not rebuilt.
func changedSet(prev *policy.Set, next map[api.ObjectRef]*object, nextList []*object, res api.ApplyResult) *policy.Set {
	n := len(res.Created) + len(res.Updated) + len(res.Deleted)
	if n > maxPatch || !policiesOnly(res) {
		return objectSet(nextList)
	}
	var upserted []*policy.Policy
	for _, refs := range [][]api.ObjectRef{res.Created, res.Updated} {
		for _, ref := range refs {
			upserted = append(upserted, next[ref].set.Policies[0])
		}
	}
	set := *prev
	set.Policies = patchSorted(prev.Policies, policyRef, res.Deleted, upserted)
	return &set
}

func policyRef(p *policy.Policy) api.ObjectRef {
	return api.ObjectRef{Kind: p.Kind, Namespace: p.Namespace, Name: p.Name}
}

// policiesOnly says whether a change creates, updates or deletes policies
// and nothing else.
func policiesOnly(res api.ApplyResult) bool {
	for _, refs := range [][]api.ObjectRef{res.Created, res.Updated, res.Deleted} {
		for _, ref := range refs {
			if !objects.IsPolicy(ref.Kind) {
				return false
			}
		}
	}
	return true
}

// patchSorted returns a copy of list, sorted by the refs of its elements
// in objects.Compare order, without the deleted refs and with each upserted
// element in the place of the one with its ref, or inserted in order.
func patchSorted[T any](list []T, ref func(T) api.ObjectRef, deleted []api.ObjectRef, upserted []T) []T {
	out := make([]T, len(list), len(list)+len(upserted))
	copy(out, list)
	find := func(r api.ObjectRef) (int, bool) {
		return slices.BinarySearchFunc(out, r, func(e T, r api.ObjectRef) int { return objects.Compare(ref(e), r) })
	}
	for _, r := range deleted {
		if i, ok := find(r); ok {
			out = slices.Delete(out, i, i+1)
		}
	}
	for _, e := range upserted {
		if i, ok := find(ref(e)); ok {
			out[i] = e
		} else {
			out = slices.Insert(out, i, e)
		}
	}
	return out
}

func sortRefs(refs []api.ObjectRef) { objects.SortRefs(refs) }

// ResolveKind maps what a user types after `bulkhead get` to the kinds it
// means (objects.Resolve).
func ResolveKind(s string) ([]string, error) { return objects.Resolve(s) }
