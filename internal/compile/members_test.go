package compile

import (
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

// memberSet behaves as the map of sets it replaced, through any sequence
// of additions and removals.
func TestMembersIsASet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	m := map[int]*memberSet[int]{}
	want := map[int]map[int]struct{}{}
	for range 20_000 {
		k, v, add := rng.IntN(4), rng.IntN(4), rng.IntN(3) > 0
		setMember(m, k, v, add)
		if add {
			if want[k] == nil {
				want[k] = map[int]struct{}{}
			}
			want[k][v] = struct{}{}
		} else {
			delete(want[k], v)
			if len(want[k]) == 0 {
				delete(want, k)
			}
		}
		if !slices.Equal(slices.Sorted(maps.Keys(m)), slices.Sorted(maps.Keys(want))) {
			t.Fatalf("keys %v, want %v", slices.Sorted(maps.Keys(m)), slices.Sorted(maps.Keys(want)))
		}
		for k, s := range m {
			if got, w := slices.Sorted(s.all()), slices.Sorted(maps.Keys(want[k])); !slices.Equal(got, w) {
				t.Fatalf("members of %d: %v, want %v", k, got, w)
			}
		}
	}
	var none *memberSet[int]
	for range none.all() {
		t.Fatal("a nil set has a member")
	}
}

// has tells what all yields.
func TestMembersHas(t *testing.T) {
	var s memberSet[int]
	for _, step := range []struct {
		add  bool
		v    int
		want []int
	}{{true, 1, []int{1}}, {true, 1, []int{1}}, {true, 2, []int{1, 2}}, {false, 1, []int{2}}, {false, 2, nil}} {
		if step.add {
			s.add(step.v)
		} else {
			s.remove(step.v)
		}
		for v := range 3 {
			if s.has(v) != slices.Contains(step.want, v) {
				t.Fatalf("after %+v: has(%d) = %v", step, v, s.has(v))
			}
		}
		if s.empty() != (len(step.want) == 0) {
			t.Fatalf("after %+v: empty() = %v", step, s.empty())
		}
	}
}
