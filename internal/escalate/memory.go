package escalate

import "time"

// settledSet keeps the verdicts of recently decided connections by their
// 5-tuple, so that a copy their client resends is answered unasked. A TCP
// connection is also known by its first sequence number: a SYN with
// another is a new connection on the same ports, and is asked. It holds
// at most its capacity, the oldest going first.
type settledSet struct {
	byConn map[Conn]settledEntry
	ring   []settledSlot // insertion order, a circular buffer
	head   int
	size   int
	seq    uint64
}

type settledEntry struct {
	v       Verdict
	tcpSeq  uint32
	expires time.Time
	seq     uint64
}

type settledSlot struct {
	conn Conn
	seq  uint64
}

func newSettledSet(capacity int) settledSet {
	return settledSet{byConn: map[Conn]settledEntry{}, ring: make([]settledSlot, capacity)}
}

func (s *settledSet) get(c Conn, seq uint32, now time.Time) (Verdict, bool) {
	e, ok := s.byConn[c]
	if !ok || !now.Before(e.expires) || e.tcpSeq != seq {
		return Deny, false
	}
	return e.v, true
}

func (s *settledSet) put(c Conn, seq uint32, v Verdict, expires time.Time) {
	if s.size == len(s.ring) {
		s.evictOldest()
	}
	s.seq++
	s.byConn[c] = settledEntry{v: v, tcpSeq: seq, expires: expires, seq: s.seq}
	s.ring[(s.head+s.size)%len(s.ring)] = settledSlot{conn: c, seq: s.seq}
	s.size++
}

func (s *settledSet) evictOldest() {
	old := s.ring[s.head]
	if e, ok := s.byConn[old.conn]; ok && e.seq == old.seq {
		delete(s.byConn, old.conn)
	}
	s.ring[s.head] = settledSlot{}
	s.head = (s.head + 1) % len(s.ring)
	s.size--
}

// expire drops the entries at the front that have expired. Entries are
// not in order of expiry (a denial lives longer than an allowance), so a
// few expired ones may wait behind a live one: get ignores them.
func (s *settledSet) expire(now time.Time) {
	for s.size > 0 {
		old := s.ring[s.head]
		if e, ok := s.byConn[old.conn]; ok && e.seq == old.seq && now.Before(e.expires) {
			return
		}
		s.evictOldest()
	}
}

// expireMemoryLocked forgets remembered decisions past their time.
func (h *Holder) expireMemoryLocked(now time.Time) {
	for k, r := range h.memory {
		if !now.Before(r.Expires) {
			delete(h.memory, k)
		}
	}
}
