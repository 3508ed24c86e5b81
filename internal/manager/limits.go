package manager

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/revisions"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Limits bound what one client may send the manager and hold open, so
// that no client, with credentials or without, can starve the others.
// The zero value means the defaults; docs/manager.md lists them.
type Limits struct {
	// PublicBodyBytes bounds a body on a route that needs no credentials
	// (POST /v1/join: a token and a CSR fit in a few KiB). Default 16 KiB.
	// SmallBodyBytes bounds one on a route with credentials that takes
	// no documents (default 64 KiB); apply, delete and workload reports
	// take Config.MaxBodyBytes.
	PublicBodyBytes, SmallBodyBytes int64
	// ReadHeaderTimeout bounds reading a request's headers (default 10 s);
	// IdleTimeout how long a kept-alive connection may wait for its next
	// request (default 120 s).
	ReadHeaderTimeout, IdleTimeout time.Duration
	// BodyTimeout bounds reading a request's body (default 30 s; on a
	// public route PublicBodyTimeout, default 5 s).
	BodyTimeout, PublicBodyTimeout time.Duration
	// WriteTimeout bounds writing a response (default 60 s): from the
	// start of the handler for a plain request, after the wait for one
	// that waits (?wait=), and per write for a watch stream, which may
	// last for days.
	WriteTimeout time.Duration
	// Requests bounds the requests one token or host may have in flight
	// at once, Streams its watch streams (defaults 32 and 4). Anonymous
	// bounds the requests without credentials from one address, and
	// AnonymousTotal from all addresses together (defaults 8 and 64).
	// Bulk bounds, among its requests, those that may carry large bodies
	// (apply, delete, workload reports; default 2), so that one token or
	// host holds at most Bulk × Config.MaxBodyBytes of bodies.
	// Past a bound the manager answers 429 with Retry-After.
	Requests, Streams, Bulk, Anonymous, AnonymousTotal int
	// Rate is how many requests per second one token, host or address
	// may make on average, Burst how many at once after a pause
	// (defaults 200 and 1,000): in-flight bounds alone would let one
	// client keep 32 handlers busy without pause, and so most of the CPU.
	Rate, Burst int
}

func (l Limits) withDefaults() Limits {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if l.PublicBodyBytes <= 0 {
		l.PublicBodyBytes = 16 << 10
	}
	if l.SmallBodyBytes <= 0 {
		l.SmallBodyBytes = 64 << 10
	}
	def(&l.ReadHeaderTimeout, 10*time.Second)
	def(&l.IdleTimeout, 120*time.Second)
	def(&l.BodyTimeout, 30*time.Second)
	def(&l.PublicBodyTimeout, 5*time.Second)
	def(&l.WriteTimeout, 60*time.Second)
	defInt(&l.Requests, 32)
	defInt(&l.Streams, 4)
	defInt(&l.Bulk, 2)
	defInt(&l.Anonymous, 8)
	defInt(&l.AnonymousTotal, 64)
	defInt(&l.Rate, 200)
	defInt(&l.Burst, 1000)
	return l
}

// routeClass says how long a route may hold its connection.
type routeClass int

const (
	plain  routeClass = iota // answers at once
	waits                    // may wait for the hosts (?wait=, at most MaxWait) before it answers
	stream                   // a watch: writes for as long as the client reads
)

// longRoutes are the routes that hold their connection longer than a
// plain answer; every other route is plain.
var longRoutes = map[string]routeClass{
	"GET /v1/watch":  stream,
	"POST /v1/apply": waits, "POST /v1/delete": waits, "POST /v1/revisions/{rev}/rollback": waits,
	"POST /v1/escalations": waits, "GET /v1/escalations": stream, // until decided (escalations.MaxWait); ?follow=1
}

func classOf(rt route) routeClass { return longRoutes[rt.method+" "+rt.path] }

// Retry-After values, in seconds: a request slot frees within a request's
// time; a stream slot only when one of the client's streams ends.
const (
	retryRequest = 1
	retryStream  = 10
)

// limiter counts what each principal holds: requests and streams per
// token or host, requests per address for clients without credentials.
type limiter struct {
	lim Limits
	now func() time.Time

	mu      sync.Mutex
	held    map[string]*holding
	buckets map[string]*bucket  // request rate, by the same keys
	anon    int                 // anonymous requests in flight, all addresses
	refused map[string]*refusal // counted, and logged at most every refusalLogEvery
}

// bucket is a token bucket: tokens at last, refilled at Rate per second
// up to Burst.
type bucket struct {
	tokens float64
	last   time.Time
}

// maxBuckets bounds the buckets kept; past it, full ones are dropped
// (a full bucket is what a new one would be).
const maxBuckets = 10_000

// take takes a token from key's bucket, or says how long until there is
// one.
func (l *limiter) take(key string, now time.Time) (wait time.Duration, ok bool) {
	b := l.buckets[key]
	if b == nil {
		if len(l.buckets) >= maxBuckets {
			l.dropFull(now)
		}
		b = &bucket{tokens: float64(l.lim.Burst), last: now}
		l.buckets[key] = b
	}
	b.tokens = min(float64(l.lim.Burst), b.tokens+now.Sub(b.last).Seconds()*float64(l.lim.Rate))
	b.last = now
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) / float64(l.lim.Rate) * float64(time.Second)), false
	}
	b.tokens--
	return 0, true
}

func (l *limiter) dropFull(now time.Time) {
	full := time.Duration(float64(l.lim.Burst) / float64(l.lim.Rate) * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= maxBuckets {
		clear(l.buckets) // every one is busy: forget them rather than grow
	}
}

type holding struct{ requests, streams, bulk int }

type refusal struct {
	count  int
	logged time.Time
}

const refusalLogEvery = 10 * time.Second

func newLimiter(lim Limits, now func() time.Time) *limiter {
	return &limiter{lim: lim, now: now, held: map[string]*holding{}, buckets: map[string]*bucket{}, refused: map[string]*refusal{}}
}

// limitKey names what a request counts against: its principal, or its
// source address when it has none.
func limitKey(p principal, r *http.Request) (key string, anonymous bool) {
	if p.kind != "" {
		return p.kind + ":" + p.name, false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	return "address:" + host, true
}

// slot is what a request holds while it runs.
type slot int

const (
	slotRequest slot = iota // a request
	slotBulk                // a request whose body may be large: also a bulk slot
	slotStream              // a watch stream (not a request slot)
)

// acquire takes a slot of kind for key, or refuses with 429; release
// gives it back.
func (l *limiter) acquire(key string, anonymous bool, kind slot) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.held[key]
	if h == nil {
		h = &holding{}
		l.held[key] = h
	}
	const over = "too many %s for %s: %d held, the limit is %d; try again in %d s"
	switch {
	case anonymous && l.anon >= l.lim.AnonymousTotal:
		return nil, l.refuse(key, h, retryRequest, over, "requests without credentials", "all clients without credentials", l.anon, l.lim.AnonymousTotal, retryRequest)
	case anonymous && h.requests >= l.lim.Anonymous:
		return nil, l.refuse(key, h, retryRequest, over, "requests without credentials from this address", key, h.requests, l.lim.Anonymous, retryRequest)
	case kind == slotStream && h.streams >= l.lim.Streams:
		return nil, l.refuse(key, h, retryStream, over, "watch streams", key, h.streams, l.lim.Streams, retryStream)
	case kind != slotStream && h.requests >= l.lim.Requests:
		return nil, l.refuse(key, h, retryRequest, over, "requests in flight", key, h.requests, l.lim.Requests, retryRequest)
	case kind == slotBulk && h.bulk >= l.lim.Bulk:
		return nil, l.refuse(key, h, retryRequest, over, "large requests (apply, delete, workload reports) in flight", key, h.bulk, l.lim.Bulk, retryRequest)
	}
	if wait, ok := l.take(key, l.now()); !ok {
		retry := int(math.Ceil(wait.Seconds()))
		return nil, l.refuse(key, h, retry, "too many requests for %s: more than %d a second (in bursts of %d); try again in %d s",
			key, l.lim.Rate, l.lim.Burst, retry)
	}
	h.add(kind, 1)
	if anonymous {
		l.anon++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			h.add(kind, -1)
			if anonymous {
				l.anon--
			}
			if h.idle() && l.held[key] == h {
				delete(l.held, key)
			}
		})
	}, nil
}

func (h *holding) add(kind slot, n int) {
	switch kind {
	case slotStream:
		h.streams += n
	case slotBulk:
		h.bulk += n
		h.requests += n
	default:
		h.requests += n
	}
}

func (h *holding) idle() bool { return h.requests == 0 && h.streams == 0 }

// tooMany is a 429: the error says which bound, and Retry-After when to
// come back.
type tooMany struct {
	err        *fault.Error // of kind fault.TooMany
	retryAfter int
	// log is set on the first refusal of a key in refusalLogEvery, with
	// the count since the last log line.
	log   bool
	count int
}

func (e *tooMany) Error() string { return e.err.Error() }
func (e *tooMany) Unwrap() error { return e.err }

func (l *limiter) refuse(key string, h *holding, retry int, format string, args ...any) error {
	if h.idle() {
		delete(l.held, key)
	}
	e := &tooMany{err: fault.New(fault.TooMany, nil, format, args...), retryAfter: retry}
	rf := l.refused[key]
	if rf == nil {
		if len(l.refused) >= 10_000 {
			clear(l.refused) // bounded: addresses are many; the counts are for the log only
		}
		rf = &refusal{}
		l.refused[key] = rf
	}
	rf.count++
	if now := l.now(); now.Sub(rf.logged) >= refusalLogEvery {
		e.log, e.count = true, rf.count
		rf.logged, rf.count = now, 0
	}
	return e
}

// admit holds r to its limits: it takes a slot for the principal (or
// the address without one), bounds the body's size and the request's
// deadlines, or answers the refusal and returns ok false. The caller
// serves r with the writer returned, and calls release when done.
func (m *Manager) admit(w http.ResponseWriter, r *http.Request, rt route, p principal) (_ http.ResponseWriter, release func(), ok bool) {
	key, anonymous := limitKey(p, r)
	kind := slotRequest
	switch {
	case classOf(rt) == stream:
		kind = slotStream
	case bulkRoutes[rt.method+" "+rt.path]:
		kind = slotBulk
	}
	release, err := m.limiter.acquire(key, anonymous, kind)
	if err != nil {
		m.answerTooMany(w, r, err.(*tooMany), anonymous)
		return w, nil, false
	}
	w = m.setDeadlines(w, r, rt)
	if limit := m.bodyLimit(rt); r.ContentLength > limit {
		if anonymous && r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		m.writeError(w, r, fault.New(fault.TooLarge, nil, "request body: %d bytes, larger than the limit of %d bytes for %s %s",
			r.ContentLength, limit, rt.method, rt.path))
		release()
		return w, nil, false
	} else if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}
	return w, release, true
}

// answerTooMany writes a 429 with Retry-After. A client without
// credentials also loses its connection, so that the server does not read
// a body nobody will use.
func (m *Manager) answerTooMany(w http.ResponseWriter, r *http.Request, e *tooMany, anonymous bool) {
	if e.log {
		m.log.Warn("refused requests over a limit", "method", r.Method, "path", r.URL.Path, "err", e.err.Msg, "refused", e.count)
	}
	w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	if anonymous && r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close")
	}
	m.writeError(w, r, e.err)
}

// bulkRoutes take documents or workload reports, and so bodies of up to
// Config.MaxBodyBytes. Every other route takes a token, a CSR or a
// status: Limits.SmallBodyBytes, so that what one client may hold in
// bodies stays small unless it needs more.
var bulkRoutes = map[string]bool{
	"POST /v1/apply": true, "POST /v1/delete": true,
	"PUT /v1/hosts/{host}/workloads": true, "POST /v1/hosts/{host}/workloads": true,
	"POST /v1/flows": true, // a batch of up to 4,096 flows
}

// bodyLimit is the largest body a route takes.
func (m *Manager) bodyLimit(rt route) int64 {
	switch {
	case rt.access.public:
		return m.cfg.Limits.PublicBodyBytes
	case bulkRoutes[rt.method+" "+rt.path]:
		return m.cfg.MaxBodyBytes
	}
	return m.cfg.Limits.SmallBodyBytes
}

// setDeadlines bounds how long the request may take to arrive and its
// answer to leave, per request rather than per connection, so that a
// watch stream lives as long as its reader keeps up. For a stream it
// returns a writer that moves the write deadline before every write.
func (m *Manager) setDeadlines(w http.ResponseWriter, r *http.Request, rt route) http.ResponseWriter {
	lim := m.cfg.Limits
	rc := http.NewResponseController(w)
	now := time.Now()
	// A request without a body is read once its headers are: a deadline
	// left on the connection would end a long handler (HTTP/1.1 cancels
	// the request when the connection's background read times out).
	read := time.Time{}
	if r.Body != nil && r.Body != http.NoBody {
		read = now.Add(lim.BodyTimeout)
		if rt.access.public {
			read = now.Add(lim.PublicBodyTimeout)
		}
	}
	_ = rc.SetReadDeadline(read)
	switch classOf(rt) {
	case stream:
		return &streamWriter{ResponseWriter: w, rc: rc, timeout: lim.WriteTimeout + m.cfg.Heartbeat}
	case waits:
		_ = rc.SetWriteDeadline(now.Add(MaxWait + lim.WriteTimeout))
	default:
		_ = rc.SetWriteDeadline(now.Add(lim.WriteTimeout))
	}
	return w
}

// bodyRead lifts the body's read deadline once the body is in, for the
// reason setDeadlines gives.
func bodyRead(w http.ResponseWriter) {
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
}

// streamWriter gives every write of a stream its own deadline: a reader
// that stops reading is cut off after timeout; one that keeps reading is
// never cut off. timeout exceeds the heartbeat, so a quiet stream (which
// HTTP/2 would reset when a deadline passes between writes) lives on.
type streamWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (s *streamWriter) Write(p []byte) (int, error) {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	return s.ResponseWriter.Write(p)
}

func (s *streamWriter) WriteHeader(code int) {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	s.ResponseWriter.WriteHeader(code)
}

func (s *streamWriter) FlushError() error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	return s.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (s *streamWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// MaxMessageBytes bounds the message of a change.
const MaxMessageBytes = 4 << 10

// fits checks what committing objects after prev as c would write (the
// blobs stage writes, and commit's Txn) against the store's limits, so
// that a dry run that passes means that the change can commit, and a
// change that cannot is refused before anything is staged.
func (m *Manager) fits(prev *revisions.State, objects map[string]revisions.Object, c change) error {
	if len(c.message) > MaxMessageBytes {
		return fault.New(fault.TooLarge, nil, "message: %d bytes; the limit is %d", len(c.message), MaxMessageBytes)
	}
	lim := storeLimits(m.st)
	for k, o := range objects {
		if old, ok := prev.Objects[k]; ok && old.Hash == o.Hash {
			continue // in the store already
		}
		if err := lim.CheckTxn(nil, []store.Op{store.Put(prefixBlobs+o.Hash, o.JSON)}); err != nil {
			return fault.New(fault.TooLarge, nil, "%s %s is %d bytes as JSON, too large for the store: %w", o.Ref.Kind, nsName(o.Ref), len(o.JSON), err)
		}
	}
	chunks, order := revisions.Manifest(objects)
	for h, v := range chunks {
		if err := lim.CheckTxn(nil, []store.Op{store.Put(prefixBlobs+h, v)}); err != nil {
			return fault.New(fault.TooLarge, nil, "the revision's list of objects is too large for the store: %w", err)
		}
	}
	rec := m.newRecord(prev, objects, order, c)
	value := m.key.Seal(revisions.SealKey, &rec) // as commit will store it
	detail, err := json.Marshal(c.detail)
	if err != nil {
		return fmt.Errorf("manager: audit detail: %w", err)
	}
	// The audit entry as commitAudited will write it, after a head with
	// the longest seq and hash there can be.
	_, aconds, aops, err := audit.Append(audit.Head{Seq: math.MaxUint64 - 1, Hash: strings.Repeat("f", 64)},
		audit.Entry{Time: m.now(), Actor: c.actor.actor(), Action: c.action, Object: "revision", Detail: detail})
	if err != nil {
		return err
	}
	conds := append([]store.Cond{{Key: keyHead, ModRev: math.MaxInt64}}, aconds...)
	ops := append([]store.Op{store.Put(keyHead, value), store.Put(revisions.Key(math.MaxInt64), value)}, aops...)
	if err := lim.CheckTxn(conds, ops); err != nil {
		return fault.New(fault.TooLarge, nil, "the change is too large for one store transaction (%d objects changed): %w", len(objects), err)
	}
	return nil
}

// storeLimits are the limits of st, when it says them, else the
// defaults both stores start with.
func storeLimits(st store.Store) store.Limits {
	if l, ok := st.(interface{ Limits() store.Limits }); ok {
		return l.Limits().WithDefaults()
	}
	return store.Limits{}.WithDefaults()
}
