package agent

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// changedList and changedSet merge a change into the list and set in
// force as building them from the whole set would.
func TestChangedListIsTheSortedSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	obj := func(kind string, i int) *object {
		ref := api.ObjectRef{Kind: kind, Namespace: fmt.Sprint("ns", i%7), Name: fmt.Sprint("o", i)}
		set := &policy.Set{Policies: []*policy.Policy{{Kind: kind, Namespace: ref.Namespace, Name: ref.Name}}}
		if kind == "Segment" {
			ref.Namespace = ""
			set = &policy.Set{Segments: []*policy.Segment{{Name: ref.Name}}}
		}
		return &object{ref: ref, set: set}
	}
	kinds := []string{"Policy", "Segment", "NetworkPolicy", "Policy", "NetworkPolicy"}
	prevSet := map[api.ObjectRef]*object{}
	for i := range 200 {
		o := obj(kinds[i%len(kinds)], i)
		prevSet[o.ref] = o
	}
	for round := range 200 {
		prev := sortedObjects(prevSet)
		next := maps.Clone(prevSet)
		var res api.ApplyResult
		for range rng.IntN(6) {
			switch o := obj(kinds[rng.IntN(len(kinds))], rng.IntN(300)); {
			case next[o.ref] == nil && slices.Contains(res.Deleted, o.ref):
			case next[o.ref] == nil:
				next[o.ref] = o
				res.Created = append(res.Created, o.ref)
			case rng.IntN(2) == 0 && !slices.Contains(res.Created, o.ref) && !slices.Contains(res.Updated, o.ref):
				delete(next, o.ref)
				res.Deleted = append(res.Deleted, o.ref)
			case !slices.Contains(res.Created, o.ref) && !slices.Contains(res.Updated, o.ref):
				next[o.ref] = o
				res.Updated = append(res.Updated, o.ref)
			}
		}
		for _, refs := range [][]api.ObjectRef{res.Created, res.Updated, res.Deleted} {
			sortRefs(refs)
		}
		got, want := changedList(prev, &objectsAfter{base: next}, res), sortedObjects(next)
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: %d objects, want %d (change %+v)", round, len(got), len(want), res)
		}
		gotSet, wantSet := changedSet(objectSet(prev), &objectsAfter{base: next}, got, res), objectSet(want)
		if !slices.Equal(gotSet.Policies, wantSet.Policies) || !slices.Equal(gotSet.Segments, wantSet.Segments) {
			t.Fatalf("round %d: %d policies, want %d (change %+v)", round, len(gotSet.Policies), len(wantSet.Policies), res)
		}
		prevSet = next
	}
}
