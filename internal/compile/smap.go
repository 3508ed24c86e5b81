package compile

import (
	"hash/maphash"
	"maps"
)

// numShards is the shard count of every map. A write clones its shard
// (once per snapshot) and Diff compares the shards two states do not
// share, so the cost of a change is the number of shards it writes times
// the size of a shard.
const numShards = 1024

// smap is a map split into shards with copy-on-write snapshots. A Compiler
// writes through its working copy; freeze hands out an immutable copy.
type smap[K comparable, V any] struct {
	seed   maphash.Seed
	gen    uint64         // shards with this generation belong to the working copy
	part   func(K) uint64 // the part of a key that picks its shard; nil: all of it
	shards [numShards]*shard[K, V]
}

type shard[K comparable, V any] struct {
	m   map[K]V
	gen uint64
}

func newSmap[K comparable, V any]() *smap[K, V] { return newSmapBy[K, V](nil) }

// newSmapBy makes a map whose keys with equal part share a shard.
func newSmapBy[K comparable, V any](part func(K) uint64) *smap[K, V] {
	s := &smap[K, V]{seed: maphash.MakeSeed(), gen: 1, part: part}
	empty := &shard[K, V]{m: map[K]V{}}
	for i := range s.shards {
		s.shards[i] = empty
	}
	return s
}

func (s *smap[K, V]) index(k K) int {
	if s.part != nil {
		return int(maphash.Comparable(s.seed, s.part(k)) % numShards)
	}
	return int(maphash.Comparable(s.seed, k) % numShards)
}

func (s *smap[K, V]) get(k K) (V, bool) {
	v, ok := s.shards[s.index(k)].m[k]
	return v, ok
}

func (s *smap[K, V]) getOr(k K) V {
	v, _ := s.get(k)
	return v
}

// writable returns the shard of k, cloned first if a snapshot shares it.
func (s *smap[K, V]) writable(k K) *shard[K, V] {
	i := s.index(k)
	sh := s.shards[i]
	if sh.gen != s.gen {
		m := maps.Clone(sh.m) // copies the table, no rehashing
		sh = &shard[K, V]{m: m, gen: s.gen}
		s.shards[i] = sh
	}
	return sh
}

func (s *smap[K, V]) set(k K, v V) { s.writable(k).m[k] = v }

func (s *smap[K, V]) del(k K) {
	if _, ok := s.get(k); ok {
		delete(s.writable(k).m, k)
	}
}

// freeze returns an immutable copy and starts a new generation, so that
// the next write to any shard clones it.
func (s *smap[K, V]) freeze() *smap[K, V] {
	c := *s
	c.gen = 0
	s.gen++
	return &c
}

func (s *smap[K, V]) len() int {
	n := 0
	for _, sh := range s.shards {
		n += len(sh.m)
	}
	return n
}

// empty reports whether s is nil or holds nothing.
func (s *smap[K, V]) empty() bool {
	if s == nil {
		return true
	}
	for _, sh := range s.shards {
		if len(sh.m) > 0 {
			return false
		}
	}
	return true
}

// adds lists every element of s as an Add: the diff from an empty map,
// without looking anything up.
func (s *smap[K, V]) adds() []Change[K, V] {
	out := make([]Change[K, V], 0, s.len())
	for _, sh := range s.shards {
		if len(sh.m) == 0 {
			continue
		}
		for k, v := range sh.m {
			out = append(out, Change[K, V]{Op: Add, Key: k, New: v})
		}
	}
	return out
}

func (s *smap[K, V]) each(f func(K, V)) {
	for _, sh := range s.shards {
		if len(sh.m) == 0 {
			continue
		}
		for k, v := range sh.m {
			f(k, v)
		}
	}
}

// Op is the kind of a change.
type Op uint8

// The kinds of change.
const (
	Add Op = iota + 1
	Update
	Delete
)

// Change is one element to write to or remove from a dataplane map.
type Change[K comparable, V any] struct {
	Op  Op
	Key K
	Old V // for Update and Delete
	New V // for Add and Update
}

// diffSmap compares two maps shard by shard. Shards that the two share
// (the same pointer) are skipped, so the cost follows the shards an update
// touched. Maps from unrelated builds have different seeds and are
// compared element by element.
func diffSmap[K comparable, V any](a, b *smap[K, V], eq func(V, V) bool) []Change[K, V] {
	var out []Change[K, V]
	if a.empty() {
		return b.adds()
	}
	if a.seed != b.seed {
		return diffMaps(a.each, a.get, b.each, b.get, eq)
	}
	for i := range b.shards {
		sa, sb := a.shards[i], b.shards[i]
		if sa == sb {
			continue
		}
		for k, nv := range sb.m {
			ov, ok := sa.m[k]
			switch {
			case !ok:
				out = append(out, Change[K, V]{Op: Add, Key: k, New: nv})
			case !eq(ov, nv):
				out = append(out, Change[K, V]{Op: Update, Key: k, Old: ov, New: nv})
			}
		}
		for k, ov := range sa.m {
			if _, ok := sb.m[k]; !ok {
				out = append(out, Change[K, V]{Op: Delete, Key: k, Old: ov})
			}
		}
	}
	return out
}

func diffMaps[K comparable, V any](aEach func(func(K, V)), aGet func(K) (V, bool),
	bEach func(func(K, V)), bGet func(K) (V, bool), eq func(V, V) bool) []Change[K, V] {
	var out []Change[K, V]
	bEach(func(k K, nv V) {
		ov, ok := aGet(k)
		switch {
		case !ok:
			out = append(out, Change[K, V]{Op: Add, Key: k, New: nv})
		case !eq(ov, nv):
			out = append(out, Change[K, V]{Op: Update, Key: k, Old: ov, New: nv})
		}
	})
	aEach(func(k K, ov V) {
		if _, ok := bGet(k); !ok {
			out = append(out, Change[K, V]{Op: Delete, Key: k, Old: ov})
		}
	})
	return out
}
