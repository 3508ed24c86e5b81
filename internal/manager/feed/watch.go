// Package feed serves the agents' feed (GET /v1/watch?from=REV): NDJSON
// lines, each an api.FeedEvent. It follows the store's keys under feed/ — the head, the
// workloads of every host, the identities — and turns a head change into
// the object puts and deletes between the revision and its parent.
//
// Per watch, one producer queues chunks of lines — each revision's from
// the hub's log (hub.go), or read from the store while the watch is
// behind that log — and a writer sends them; the bounded queue between
// them holds WatchBuffer chunks. A reader that leaves the queue full for
// Config.SlowReaderCutoff is cut off with a "cutoff" line naming the
// revision to resume after; the store's writers never wait for any of
// this. A from that the store has compacted gets a "resync" line, then a
// whole snapshot, as does from=0 (with "snapshot").
//
// A Server is the feed of one manager: Run follows the store for the
// hub, Serve streams one watch. The manager authenticates the watch and
// says, with valid, whether its credentials still hold (watch.go's
// handler in internal/manager).
package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/identities"
	"github.com/bulkhead-dev/bulkhead/internal/manager/revisions"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Store keys the feed follows: the head (revisions.HeadKey), the
// workloads, the identities (identities.Prefix).
const (
	Prefix         = "feed/"
	WorkloadPrefix = "feed/workloads/" // host/namespace/name → api.HostWorkload
)

// Server is one manager's feed. Set its fields, then call Run once and
// Serve for each watch.
type Server struct {
	Store   store.Store
	History *revisions.History // the policy states whose objects the feed sends
	Log     *slog.Logger
	// Heartbeat is the interval of heartbeat lines on a quiet watch;
	// Buffer bounds the chunks of lines a watch holds for a slow reader,
	// and Cutoff is how long they may stay full before it is cut off.
	Heartbeat time.Duration
	Buffer    int
	Cutoff    time.Duration

	once  sync.Once
	hub   *feedHub
	heads headCache
}

// headCache keeps the encoded object lines of recent head changes, which
// every watcher sends alike.
type headCache struct {
	mu sync.Mutex
	m  map[int64][]byte
}

func (s *Server) init() {
	s.once.Do(func() { s.hub = newFeedHub() })
}

// Serve streams the feed from revision from (0: a snapshot first) to w
// until ctx ends, the reader is too slow, or valid (checked at every
// heartbeat) says the watch's credentials no longer hold; it ends with a
// "cutoff" line saying why.
func (s *Server) Serve(ctx context.Context, w http.ResponseWriter, from int64, valid func() error) {
	s.init()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	q := newFeedQueue(s.Buffer, s.Cutoff)
	go func() {
		defer close(q.done)
		q.err = s.produce(ctx, from, q)
	}()
	s.writeFeed(ctx, w, valid, q)
	cancel()
	<-q.done
}

const (
	writeDeadline = 30 * time.Second
	snapshotChunk = 64 << 10 // bytes of snapshot lines per queued chunk
)

type feedQueue struct {
	ch     chan feedChunk
	done   chan struct{}
	cutoff time.Duration // how long a full queue may stay full
	err    error         // why the producer stopped; read after done
}

// feedChunk is lines to send: a revision's, shared by every watch that
// sends it, or a part of a snapshot. rev is the revision of the "rev"
// line that ends it, if it ends with one.
type feedChunk struct {
	data []byte
	rev  int64
}

func newFeedQueue(size int, cutoff time.Duration) *feedQueue {
	return &feedQueue{ch: make(chan feedChunk, size), done: make(chan struct{}), cutoff: cutoff}
}

var errSlowReader = errors.New("slow reader")

// send queues a chunk, waiting at most q.cutoff for room.
func (q *feedQueue) send(ctx context.Context, c feedChunk) error {
	select {
	case q.ch <- c:
		return nil
	default:
	}
	t := time.NewTimer(q.cutoff)
	defer t.Stop()
	select {
	case q.ch <- c:
		return nil
	case <-t.C:
		return fmt.Errorf("%w: %d chunks of lines unread for %s", errSlowReader, cap(q.ch), q.cutoff)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// line queues one line that is not a "rev" line.
func (q *feedQueue) line(ctx context.Context, data []byte) error {
	return q.send(ctx, feedChunk{data: data})
}

// writeFeed sends the queued lines, heartbeats when nothing happens, and
// ends with a "cutoff" line when the producer stops or the agent's
// certificate is revoked.
func (s *Server) writeFeed(ctx context.Context, w http.ResponseWriter, valid func() error, q *feedQueue) {
	rc := http.NewResponseController(w)
	tick := time.NewTicker(s.Heartbeat)
	defer tick.Stop()
	var last int64 // the rev of the last "rev" line sent
	write := func(c feedChunk) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeDeadline))
		if _, err := w.Write(c.data); err != nil {
			return false
		}
		if c.rev > 0 {
			last = c.rev
		}
		return true
	}
	for {
		select {
		case c := <-q.ch:
			if !write(c) {
				return
			}
			// Write what is queued before flushing once.
			for n := len(q.ch); n > 0; n-- {
				if !write(<-q.ch) {
					return
				}
			}
			if rc.Flush() != nil {
				return
			}
		case <-tick.C:
			reason := ""
			if err := valid(); err != nil {
				reason = err.Error()
			}
			if reason != "" {
				write(feedChunk{data: encodeEvent(api.FeedEvent{Type: api.FeedCutoff, Rev: last, Reason: reason})})
				_ = rc.Flush()
				return
			}
			if !write(feedChunk{data: encodeEvent(api.FeedEvent{Type: api.FeedHeartbeat, Rev: last})}) || rc.Flush() != nil {
				return
			}
		case <-q.done:
			for n := len(q.ch); n > 0; n-- {
				if !write(<-q.ch) {
					return
				}
			}
			reason := "the manager is shutting down"
			if q.err != nil && ctx.Err() == nil {
				reason = q.err.Error()
			}
			write(feedChunk{data: encodeEvent(api.FeedEvent{Type: api.FeedCutoff, Rev: last, Reason: reason + fmt.Sprintf("; resume with from=%d", last+1)})})
			_ = rc.Flush()
			return
		case <-ctx.Done():
			return
		}
	}
}

func encodeEvent(e api.FeedEvent) []byte {
	data, _ := json.Marshal(e)
	return append(data, '\n')
}

// produce queues the feed from rev from (0: a snapshot first) until ctx
// ends or the reader is too slow. A watch the store ends for its own
// reasons resumes where it was; a compacted one resynchronizes.
func (s *Server) produce(ctx context.Context, from int64, q *feedQueue) error {
	cur, err := s.Store.Rev(ctx)
	if err != nil {
		return err
	}
	switch {
	case from == 0:
		rev, err := s.snapshot(ctx, q, api.FeedSnapshot, "")
		if err != nil {
			return err
		}
		from = rev + 1
	case from > cur+1:
		// The reader has seen revisions this store never made: the store
		// was replaced. What it holds cannot be trusted.
		reason := fmt.Sprintf("revision %d is ahead of the store's %d: the store was replaced", from, cur)
		rev, err := s.snapshot(ctx, q, api.FeedResync, reason)
		if err != nil {
			return err
		}
		from = rev + 1
	}
	for ctx.Err() == nil {
		if s.hub.covers(from) {
			next, err := s.followHub(ctx, from, q)
			if err != nil {
				return err
			}
			from = next // fell behind the hub's log: catch up from the store
			continue
		}
		next, err := s.follow(ctx, from, q)
		var compacted *store.CompactedError
		switch {
		case errors.As(err, &compacted):
			reason := fmt.Sprintf("revision %d is no longer kept (the oldest is %d)", from, compacted.Oldest)
			rev, err := s.snapshot(ctx, q, api.FeedResync, reason)
			if err != nil {
				return err
			}
			from = rev + 1
		case err == nil && s.hub.covers(next):
			from = next // caught up: the hub's log holds the rest
		case errors.Is(err, errSlowReader) || ctx.Err() != nil:
			return err
		case errors.Is(err, store.ErrClosed):
			return err
		default:
			s.Log.Debug("feed watch ended; resuming", "from", next, "err", err)
			from = next
			sleep(ctx, 20*time.Millisecond)
		}
	}
	return ctx.Err()
}

// followHub queues the revisions from from on out of the hub's log; it
// returns with no error when the log no longer holds what comes next.
func (s *Server) followHub(ctx context.Context, from int64, q *feedQueue) (int64, error) {
	for {
		entries, changed, ok := s.hub.since(from)
		if !ok {
			return from, nil
		}
		for _, e := range entries {
			if err := q.send(ctx, feedChunk{data: e.data, rev: e.rev}); err != nil {
				return from, err
			}
			from = e.rev + 1
		}
		if len(entries) > 0 {
			continue
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return from, ctx.Err()
		}
	}
}

// follow queues the changes from rev from on, reading the store itself,
// until the hub's log holds what comes next; it returns where to resume.
func (s *Server) follow(ctx context.Context, from int64, q *feedQueue) (int64, error) {
	return s.eachRevision(ctx, from, func(rev int64, data []byte) (bool, error) {
		if err := q.send(ctx, feedChunk{data: data, rev: rev}); err != nil {
			return false, err
		}
		return s.hub.covers(rev + 1), nil
	})
}

// revisionLines encodes one revision's events, then its "rev" line with
// the policy revision when the head changed.
func (s *Server) revisionLines(ctx context.Context, events []store.Event) ([]byte, error) {
	var out []byte
	var policyRev int64
	for _, ev := range events {
		switch key := ev.KV.Key; {
		case key == revisions.HeadKey && ev.Type == store.EventPut:
			data, err := s.headLines(ctx, ev.KV)
			if err != nil {
				return nil, err
			}
			out, policyRev = append(out, data...), ev.KV.ModRev
		case strings.HasPrefix(key, WorkloadPrefix):
			out = append(out, workloadLine(ev)...)
		case strings.HasPrefix(key, identities.Prefix):
			out = append(out, identityLine(ev)...)
		}
	}
	rev := events[0].KV.ModRev
	return append(out, encodeEvent(api.FeedEvent{Type: api.FeedRev, Rev: rev, Policy: policyRev})...), nil
}

func workloadLine(ev store.Event) []byte {
	e := api.FeedEvent{Type: api.FeedWorkload, Rev: ev.KV.ModRev, Op: ev.Type.String()}
	if ev.Type == store.EventPut {
		e.Workload = &api.HostWorkload{}
		if json.Unmarshal(ev.KV.Value, e.Workload) != nil {
			return nil
		}
	} else {
		parts := strings.SplitN(strings.TrimPrefix(ev.KV.Key, WorkloadPrefix), "/", 3)
		if len(parts) != 3 {
			return nil
		}
		e.Workload = &api.HostWorkload{Host: parts[0], Namespace: parts[1], Name: parts[2]}
	}
	return encodeEvent(e)
}

func identityLine(ev store.Event) []byte {
	e := api.FeedEvent{Type: api.FeedIdentity, Rev: ev.KV.ModRev, Op: ev.Type.String()}
	if ev.Type == store.EventPut {
		e.Identity = &api.Identity{}
		if json.Unmarshal(ev.KV.Value, e.Identity) != nil {
			return nil
		}
	} else {
		id, err := strconv.ParseUint(strings.TrimPrefix(ev.KV.Key, identities.Prefix), 10, 32)
		if err != nil {
			return nil
		}
		e.Identity = &api.Identity{ID: uint32(id)}
	}
	return encodeEvent(e)
}

// headLines encodes the object changes of a head change: the difference
// from the revision's parent, computed once for every watcher.
func (s *Server) headLines(ctx context.Context, kv store.KV) ([]byte, error) {
	s.heads.mu.Lock()
	data, ok := s.heads.m[kv.ModRev]
	s.heads.mu.Unlock()
	if ok {
		return data, nil
	}
	rec, err := revisions.Decode(kv)
	if err != nil {
		return nil, err
	}
	cur, err := s.History.Load(ctx, rec)
	if err != nil {
		return nil, err
	}
	parent, err := s.parentState(ctx, rec)
	if err != nil {
		return nil, err
	}
	data = objectLines(kv.ModRev, parent, cur)
	s.heads.mu.Lock()
	if s.heads.m == nil || len(s.heads.m) >= 16 {
		s.heads.m = map[int64][]byte{}
	}
	s.heads.m[kv.ModRev] = data
	s.heads.mu.Unlock()
	return data, nil
}

// parentState reads the state a revision changed: the record one before
// it in sequence, read from the store (not the mirror, which may lag).
func (s *Server) parentState(ctx context.Context, rec *revisions.Record) (*revisions.State, error) {
	if rec.Seq <= 1 {
		return s.History.Load(ctx, nil)
	}
	kv, err := s.Store.Get(ctx, revisions.Key(rec.Seq-1))
	if err != nil {
		return nil, fmt.Errorf("manager: read revision %d's parent: %w", rec.Rev, err)
	}
	parent, err := revisions.Decode(kv)
	if err != nil {
		return nil, err
	}
	return s.History.Load(ctx, parent)
}

func objectLines(rev int64, before, after *revisions.State) []byte {
	var out []byte
	for _, c := range revisions.Diff(before, after) {
		ref := c.ObjectRef
		e := api.FeedEvent{Type: api.FeedObject, Rev: rev, Op: "put", Ref: &ref, Object: c.After}
		if c.After == nil {
			e.Op, e.Object = "delete", nil
		}
		out = append(out, encodeEvent(e)...)
	}
	return out
}

// snapshot queues a marker, every object, workload and identity, and a
// "rev" line; it returns the snapshot's revision.
func (s *Server) snapshot(ctx context.Context, q *feedQueue, marker, reason string) (int64, error) {
	kvs, rev, err := s.Store.List(ctx, Prefix)
	if err != nil {
		return 0, fmt.Errorf("manager: feed snapshot: %w", err)
	}
	if err := q.line(ctx, encodeEvent(api.FeedEvent{Type: marker, Rev: rev, Reason: reason})); err != nil {
		return 0, err
	}
	var policyRev int64
	var buf []byte
	sort.Slice(kvs, func(i, j int) bool { return kvs[i].Key < kvs[j].Key })
	for _, kv := range kvs {
		var line []byte
		ev := store.Event{Type: store.EventPut, KV: kv}
		switch {
		case kv.Key == revisions.HeadKey:
			rec, err := revisions.Decode(kv)
			if err != nil {
				return 0, err
			}
			ps, err := s.History.Load(ctx, rec)
			if err != nil {
				return 0, err
			}
			policyRev = kv.ModRev
			line = objectLines(rev, &revisions.State{}, ps)
		case strings.HasPrefix(kv.Key, WorkloadPrefix):
			line = workloadLine(ev)
		case strings.HasPrefix(kv.Key, identities.Prefix):
			line = identityLine(ev)
		}
		// Lines go out in chunks: one queue slot and one write each.
		if buf = append(buf, line...); len(buf) >= snapshotChunk {
			if err := q.line(ctx, buf); err != nil {
				return 0, err
			}
			buf = nil
		}
	}
	buf = append(buf, encodeEvent(api.FeedEvent{Type: api.FeedRev, Rev: rev, Policy: policyRev})...)
	return rev, q.send(ctx, feedChunk{data: buf, rev: rev})
}
