package flowstore

import "github.com/bulkhead-dev/bulkhead/api"

// followBuffer bounds the batches a follower may be behind before it is
// cut off.
const followBuffer = 256

type follower struct{ ch chan []api.Flow }

// Follow returns a channel of the flows stored from now on, one slice per
// batch, and a func that ends the following. The channel is closed when
// the follower falls more than 256 batches behind (it reads too slowly),
// when stop is called, and when the store closes.
func (s *Store) Follow() (flows <-chan []api.Flow, stop func()) {
	f := &follower{ch: make(chan []api.Flow, followBuffer)}
	s.subMu.Lock()
	s.subs[f] = struct{}{}
	s.subMu.Unlock()
	return f.ch, func() {
		s.subMu.Lock()
		defer s.subMu.Unlock()
		if _, ok := s.subs[f]; ok {
			delete(s.subs, f)
			close(f.ch)
		}
	}
}

func (s *Store) publish(fs []api.Flow) {
	if len(fs) == 0 {
		return
	}
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for f := range s.subs {
		select {
		case f.ch <- fs:
		default:
			delete(s.subs, f)
			close(f.ch)
		}
	}
}
