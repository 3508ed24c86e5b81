package revisions

import (
	"sort"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
)

// Compare lists what differs between two object sets.
func Compare(before, after map[string]Object) api.ManagerApplyResult {
	var res api.ManagerApplyResult
	for k, o := range after {
		switch old, ok := before[k]; {
		case !ok:
			res.Created = append(res.Created, o.Ref)
		case old.Hash != o.Hash:
			res.Updated = append(res.Updated, o.Ref)
		default:
			res.Unchanged = append(res.Unchanged, o.Ref)
		}
	}
	for k, o := range before {
		if _, ok := after[k]; !ok {
			res.Deleted = append(res.Deleted, o.Ref)
		}
	}
	for _, l := range [][]api.ObjectRef{res.Created, res.Updated, res.Unchanged, res.Deleted} {
		sort.Slice(l, func(i, j int) bool { return objects.Key(l[i]) < objects.Key(l[j]) })
	}
	return res
}

// Diff is what changed from state a to state b, by object name.
func Diff(a, b *State) []api.ObjectChange {
	res := Compare(a.Objects, b.Objects)
	out := []api.ObjectChange{}
	for _, ref := range res.Created {
		out = append(out, api.ObjectChange{ObjectRef: ref, After: b.Objects[objects.Key(ref)].JSON})
	}
	for _, ref := range res.Updated {
		k := objects.Key(ref)
		out = append(out, api.ObjectChange{ObjectRef: ref, Before: a.Objects[k].JSON, After: b.Objects[k].JSON})
	}
	for _, ref := range res.Deleted {
		out = append(out, api.ObjectChange{ObjectRef: ref, Before: a.Objects[objects.Key(ref)].JSON})
	}
	sort.Slice(out, func(i, j int) bool { return objects.Key(out[i].ObjectRef) < objects.Key(out[j].ObjectRef) })
	return out
}
