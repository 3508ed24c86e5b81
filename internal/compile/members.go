package compile

import "iter"

// memberSet is a set that holds a lone member without a map: most entries
// of the compiler's indexes name one class, group or identity (a /32
// peer has one class at its level, a CIDR class one outside identity),
// and a map per entry was a tenth of what a full compile allocated.
type memberSet[V comparable] struct {
	one  V
	set  bool           // one is a member (only when more is nil)
	more map[V]struct{} // every member, once there are two or more
}

func (s *memberSet[V]) add(v V) {
	switch {
	case s.more != nil:
		s.more[v] = struct{}{}
	case !s.set:
		s.one, s.set = v, true
	case s.one != v:
		s.more = map[V]struct{}{s.one: {}, v: {}}
		var zero V
		s.one, s.set = zero, false
	}
}

func (s *memberSet[V]) remove(v V) {
	if s.more != nil {
		delete(s.more, v)
		return
	}
	if s.set && s.one == v {
		var zero V
		s.one, s.set = zero, false
	}
}

func (s *memberSet[V]) has(v V) bool {
	if s.more != nil {
		_, ok := s.more[v]
		return ok
	}
	return s.set && s.one == v
}

func (s *memberSet[V]) empty() bool {
	return s.more == nil && !s.set || s.more != nil && len(s.more) == 0
}

// all yields every member, in no particular order (as a map does); a nil
// set has none. Members added or removed while it runs may or may not be
// yielded, as with a map.
func (s *memberSet[V]) all() iter.Seq[V] {
	return func(yield func(V) bool) {
		switch {
		case s == nil:
		case s.more != nil:
			for v := range s.more {
				if !yield(v) {
					return
				}
			}
		case s.set:
			yield(s.one)
		}
	}
}

// setMember adds v to (or removes it from) the set of k in m.
func setMember[K comparable, V comparable](m map[K]*memberSet[V], k K, v V, add bool) {
	s := m[k]
	if add {
		if s == nil {
			s = &memberSet[V]{}
			m[k] = s
		}
		s.add(v)
		return
	}
	if s == nil {
		return
	}
	s.remove(v)
	if s.empty() {
		delete(m, k)
	}
}
