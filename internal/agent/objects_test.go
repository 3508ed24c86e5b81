package agent

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
)

// changedList merges a change into the list in force as sorting the whole
// set would order it.
func TestChangedListIsTheSortedSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	obj := func(kind string, i int) *object {
		ref := api.ObjectRef{Kind: kind, Namespace: fmt.Sprint("ns", i%7), Name: fmt.Sprint("o", i)}
		return &object{ref: ref, key: refKey(ref)}
	}
	kinds := []string{"Policy", "Segment", "NetworkPolicy"}
	prevSet := map[api.ObjectRef]*object{}
	for i := range 200 {
		o := obj(kinds[i%3], i)
		prevSet[o.ref] = o
	}
	for round := range 200 {
		prev := sortedObjects(prevSet)
		next := maps.Clone(prevSet)
		var res api.ApplyResult
		for range rng.IntN(6) {
			switch o := obj(kinds[rng.IntN(3)], rng.IntN(300)); {
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
		got, want := changedList(prev, next, res), sortedObjects(next)
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: %d objects, want %d (change %+v)", round, len(got), len(want), res)
		}
		prevSet = next
	}
}
