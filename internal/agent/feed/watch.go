package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
)

// errSync ends a watch whose change the agent refused: the follower
// resyncs from a snapshot after a backoff.
var errSync = errors.New("feed: the agent refused the change")

// change collects the events of one feed revision (between two "rev"
// lines), or a whole snapshot.
type change struct {
	replace bool
	objects map[api.ObjectRef]json.RawMessage // put; with replace the whole set
	deleted map[api.ObjectRef]bool
	all     map[string]*api.HostWorkload // every host's workloads put, by host/namespace/name
	gone    map[string]*api.HostWorkload // deleted
}

func newChange(replace bool) *change {
	return &change{replace: replace, objects: map[api.ObjectRef]json.RawMessage{}, deleted: map[api.ObjectRef]bool{},
		all: map[string]*api.HostWorkload{}, gone: map[string]*api.HostWorkload{}}
}

func (c *change) empty() bool {
	return !c.replace && len(c.objects)+len(c.deleted)+len(c.all)+len(c.gone) == 0
}

func workloadKey(w *api.HostWorkload) string { return w.Host + "/" + w.Namespace + "/" + w.Name }

// watchLoop follows the feed until ctx ends: from the position saved
// after the last realized revision, else from a snapshot.
func (f *Follower) watchLoop(ctx context.Context) {
	from := f.loadPosition()
	for attempt := 0; ctx.Err() == nil; attempt++ {
		next, err := f.watch(ctx, from)
		if ctx.Err() != nil {
			return
		}
		if next > from {
			attempt = 0 // it made progress: reconnect quickly
		}
		from = next
		if errors.Is(err, errSync) {
			from = 0
		}
		f.setStatus(func(s *Status) {
			s.Connected = false
			if err != nil {
				s.Error = err.Error()
			}
		})
		level := slog.LevelDebug
		if attempt == 0 {
			level = slog.LevelWarn // the first failure after progress; the rest at debug
		}
		f.log.Log(ctx, level, "watch ended; reconnecting", "err", err, "from", from, "in", f.opts.Backoff(attempt))
		if !sleep(ctx, f.opts.Backoff(attempt)) {
			return
		}
	}
}

// watch runs one watch from revision from and returns the revision to
// resume from: the one after the last the agent realized. A watch silent
// for three request timeouts (the manager sends a heartbeat every few
// seconds) is given up.
//
// Reading and applying are apart: the watch goroutine reads lines and
// merges every complete revision into one pending change, and an applier
// enforces what is pending whenever it is free. An agent that falls
// behind (a burst of applies, each Sync taking tens of milliseconds)
// therefore jumps to the latest revision in one Sync instead of applying
// every intermediate one, and its lag stays one Sync whatever the churn.
func (f *Follower) watch(ctx context.Context, from int64) (int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	silent := 3 * f.opts.Timeout
	watchdog := time.AfterFunc(silent, func() { cancel(fmt.Errorf("feed: the watch was silent for %s", silent)) })
	defer watchdog.Stop()
	ap := newApplier(from)
	applied := make(chan struct{})
	go func() { defer close(applied); f.applyLoop(ctx, ap, cancel) }()
	ch := newChange(false)
	connected := false
	_, err := f.c.Watch(ctx, from, func(ev api.FeedEvent) error {
		watchdog.Reset(silent)
		if !connected {
			connected = true
			f.mu.Lock()
			f.resend = true // the manager may have lost or never had them
			f.mu.Unlock()
			f.setStatus(func(s *Status) { s.Connected, s.Error = true, "" })
			f.log.Info("following the manager", "from", from)
		}
		return f.handle(&ch, ap, ev)
	})
	watchdog.Stop()
	ap.close() // the applier enforces what is pending, then ends
	<-applied
	switch cause := context.Cause(ctx); {
	case cause != nil && !errors.Is(cause, context.Canceled):
		err = cause // the applier's refusal, or the watchdog
	case err == nil:
		err = errors.New("feed: the manager ended the watch")
	}
	return ap.next(), err
}

// applier holds the complete revisions read and not yet enforced, merged
// into one change.
type applier struct {
	mu      sync.Mutex
	pending *change
	rev     int64         // the last revision merged into pending
	done    int64         // the revision after the last one enforced
	closed  bool          // no more revisions come
	wake    chan struct{} // 1-buffered
}

func newApplier(from int64) *applier { return &applier{done: from, wake: make(chan struct{}, 1)} }

// offer merges the complete revision rev (its change c) into what is
// pending.
func (ap *applier) offer(c *change, rev int64) {
	ap.mu.Lock()
	if ap.pending == nil {
		ap.pending = c
	} else {
		ap.pending = ap.pending.merge(c)
	}
	ap.rev = rev
	ap.mu.Unlock()
	ap.signal()
}

func (ap *applier) close() {
	ap.mu.Lock()
	ap.closed = true
	ap.mu.Unlock()
	ap.signal()
}

func (ap *applier) signal() {
	select {
	case ap.wake <- struct{}{}:
	default:
	}
}

// take returns what is pending and the revision it brings the agent to;
// last is true once closed with nothing left.
func (ap *applier) take() (c *change, rev int64, last bool) {
	ap.mu.Lock()
	defer ap.mu.Unlock()
	c, rev, ap.pending = ap.pending, ap.rev, nil
	return c, rev, c == nil && ap.closed
}

func (ap *applier) next() int64 {
	ap.mu.Lock()
	defer ap.mu.Unlock()
	return ap.done
}

// applyLoop enforces what is pending until the watch ends; a change the
// agent refuses ends the watch (cancel) with errSync.
func (f *Follower) applyLoop(ctx context.Context, ap *applier, cancel context.CancelCauseFunc) {
	for {
		c, rev, last := ap.take()
		if last {
			return
		}
		if c == nil {
			select {
			case <-ap.wake:
			case <-ctx.Done():
				return
			}
			continue
		}
		if err := f.apply(ctx, c, rev); err != nil {
			cancel(err)
			return
		}
		ap.mu.Lock()
		ap.done = rev + 1
		ap.mu.Unlock()
	}
}

// handle adds one event to the revision in progress and hands the
// revision to the applier at its "rev" line.
func (f *Follower) handle(chp **change, ap *applier, ev api.FeedEvent) error {
	ch := *chp
	switch ev.Type {
	case api.FeedSnapshot, api.FeedResync:
		if ev.Type == api.FeedResync {
			f.log.Warn("full resync", "reason", ev.Reason)
		}
		*chp = newChange(true)
	case api.FeedObject:
		if ev.Ref == nil {
			return fmt.Errorf("feed: object line at revision %d without ref", ev.Rev)
		}
		if ev.Op == "delete" {
			ch.deleteObject(*ev.Ref)
		} else {
			delete(ch.deleted, *ev.Ref)
			ch.objects[*ev.Ref] = ev.Object
		}
	case api.FeedWorkload:
		if ev.Workload == nil {
			return fmt.Errorf("feed: workload line at revision %d without workload", ev.Rev)
		}
		k := workloadKey(ev.Workload)
		if ev.Op == "delete" {
			ch.deleteWorkload(k, ev.Workload)
		} else {
			delete(ch.gone, k)
			ch.all[k] = ev.Workload
		}
	case api.FeedRev:
		ap.offer(ch, ev.Rev)
		f.read.Store(ev.Rev)
		*chp = newChange(false)
	case api.FeedHeartbeat:
		f.wake() // a status report, if one is due
	}
	return nil
}

// merge adds the later change n to c and returns the result: a later
// whole set replaces everything before it.
func (c *change) merge(n *change) *change {
	if n.replace {
		return n
	}
	for ref, raw := range n.objects {
		delete(c.deleted, ref)
		c.objects[ref] = raw
	}
	for ref := range n.deleted {
		c.deleteObject(ref)
	}
	for k, w := range n.all {
		delete(c.gone, k)
		c.all[k] = w
	}
	for k, w := range n.gone {
		c.deleteWorkload(k, w)
	}
	return c
}

// deleteObject records a delete; a whole set simply leaves it out.
func (c *change) deleteObject(ref api.ObjectRef) {
	delete(c.objects, ref)
	if !c.replace {
		c.deleted[ref] = true
	}
}

func (c *change) deleteWorkload(k string, w *api.HostWorkload) {
	delete(c.all, k)
	if !c.replace {
		c.gone[k] = w
	}
}

// apply makes the agent enforce one change (one or more revisions,
// merged) and records that it did.
func (f *Follower) apply(ctx context.Context, ch *change, rev int64) error {
	if !ch.empty() {
		req, all, remote, err := f.syncRequest(ch)
		if err != nil {
			f.setStatus(func(s *Status) { s.Error = fmt.Sprintf("revision %d not enforced: %v", rev, err) })
			f.log.Error("a revision's objects do not decode; the last good state stays in force", "revision", rev, "err", err)
			return fmt.Errorf("revision %d: %w", rev, err)
		}
		if len(req.Objects)+len(req.Documents)+len(req.Deleted) > 0 || req.Replace {
			if f.opts.beforeSync != nil {
				f.opts.beforeSync()
			}
			t0 := time.Now()
			res, err := f.opts.Agent.Sync(ctx, req)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				why := fmt.Sprintf("revision %d not enforced: %v", rev, err)
				f.setStatus(func(s *Status) { s.Error, s.Refused = why, why })
				f.log.Error("the agent refused a revision; the last good state stays in force", "revision", rev, "err", err)
				return fmt.Errorf("%w: revision %d: %w", errSync, rev, err)
			}
			f.log.Info("revision enforced", "revision", rev, "replace", req.Replace, "created", len(res.Created), "updated", len(res.Updated),
				"deleted", len(res.Deleted), "took", time.Since(t0))
		}
		f.all, f.remote = all, remote
		f.syncRoutes()
	}
	if err := f.savePosition(rev + 1); err != nil {
		f.log.Error("save the feed position", "err", err)
	}
	f.setStatus(func(s *Status) { s.Realized, s.Error, s.Refused = rev, "", "" })
	return nil
}

// syncRequest turns a change into one agent.Sync; it returns every
// host's workloads and the remote ones the agent holds after it.
func (f *Follower) syncRequest(ch *change) (agent.SyncRequest, map[string]*api.HostWorkload, map[string]remoteWorkload, error) {
	req := agent.SyncRequest{Replace: ch.replace}
	for _, ref := range sortedRefs(ch.objects, ch.deleted) {
		if raw, ok := ch.objects[ref]; ok {
			o, err := objects.Stored(ref, raw)
			if err != nil {
				return req, nil, nil, fmt.Errorf("%w: %w", errSync, err)
			}
			req.Objects = append(req.Objects, o)
		} else {
			req.Deleted = append(req.Deleted, ref)
		}
	}
	all := ch.all
	if !ch.replace {
		all = make(map[string]*api.HostWorkload, len(f.all)+len(ch.all))
		for k, w := range f.all {
			if ch.gone[k] == nil {
				all[k] = w
			}
		}
		for k, w := range ch.all {
			all[k] = w
		}
	}
	remote := f.pickRemote(all)
	for _, k := range sortedKeys(remote) {
		w := remote[k]
		if old, ok := f.remote[k]; ok && old.doc == w.doc && !ch.replace {
			continue
		}
		req.Documents = append(req.Documents, api.Document{Name: "manager: workload " + w.host + "/" + k, Data: w.doc})
	}
	if !ch.replace {
		for _, k := range sortedKeys(f.remote) {
			if _, ok := remote[k]; !ok {
				req.Deleted = append(req.Deleted, f.remote[k].ref())
			}
		}
	}
	return req, all, remote, nil
}
