package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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
// resume from. A watch silent for three request timeouts (the manager
// sends a heartbeat every few seconds) is given up.
func (f *Follower) watch(ctx context.Context, from int64) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	silent := 3 * f.opts.Timeout
	watchdog := time.AfterFunc(silent, cancel)
	defer watchdog.Stop()
	ch := newChange(false)
	connected := false
	next, err := f.c.Watch(ctx, from, func(ev api.FeedEvent) error {
		watchdog.Reset(silent)
		if !connected {
			connected = true
			f.mu.Lock()
			f.resend = true // the manager may have lost or never had them
			f.mu.Unlock()
			f.setStatus(func(s *Status) { s.Connected, s.Error = true, "" })
			f.log.Info("following the manager", "from", from)
		}
		return f.handle(ctx, &ch, ev)
	})
	switch {
	case !watchdog.Stop() && ctx.Err() != nil:
		err = fmt.Errorf("feed: the watch was silent for %s", silent)
	case err == nil:
		err = errors.New("feed: the manager ended the watch")
	}
	return next, err
}

// handle adds one event to the change in progress and applies the change
// at its "rev" line.
func (f *Follower) handle(ctx context.Context, chp **change, ev api.FeedEvent) error {
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
			delete(ch.objects, *ev.Ref)
			ch.deleted[*ev.Ref] = true
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
			delete(ch.all, k)
			ch.gone[k] = ev.Workload
		} else {
			delete(ch.gone, k)
			ch.all[k] = ev.Workload
		}
	case api.FeedRev:
		if err := f.apply(ctx, ch, ev.Rev); err != nil {
			return err
		}
		*chp = newChange(false)
	case api.FeedHeartbeat:
		f.wake() // a status report, if one is due
	}
	return nil
}

// apply makes the agent enforce one change and records that it did.
func (f *Follower) apply(ctx context.Context, ch *change, rev int64) error {
	if !ch.empty() {
		req, all, remote, err := f.syncRequest(ch)
		if err != nil {
			f.setStatus(func(s *Status) { s.Error = fmt.Sprintf("revision %d not enforced: %v", rev, err) })
			f.log.Error("a revision's objects do not decode; the last good state stays in force", "revision", rev, "err", err)
			return fmt.Errorf("revision %d: %w", rev, err)
		}
		if len(req.Objects)+len(req.Documents)+len(req.Deleted) > 0 || req.Replace {
			t0 := time.Now()
			res, err := f.opts.Agent.Sync(ctx, req)
			if err != nil {
				f.setStatus(func(s *Status) { s.Error = fmt.Sprintf("revision %d not enforced: %v", rev, err) })
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
	f.setStatus(func(s *Status) { s.Realized, s.Error = rev, "" })
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
