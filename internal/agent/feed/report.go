package feed

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
)

// statusEvery is how often the host's status is reported when nothing
// changes: the manager counts a host silent for 45 s as stale.
const statusEvery = 10 * time.Second

// reportLoop sends the host's workloads (the whole set, whenever the
// agent's registrations change, and again after each reconnect) and its
// status (whenever it changes, and every statusEvery).
func (f *Follower) reportLoop(ctx context.Context) {
	var (
		lastWorkloads string
		lastStatus    api.HostStatus
		lastSent      time.Time
	)
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for attempt := 0; ; {
		changed := f.opts.Agent.Changed()
		ws, fp := f.localWorkloads()
		f.mu.Lock()
		resend, st := f.resend, f.hostStatus()
		f.mu.Unlock()
		ok := true
		if fp != lastWorkloads || resend {
			if _, err := f.c.ReportWorkloads(ctx, f.host, ws, nil, true); err != nil {
				ok = false
				f.reportFailed("report workloads", err)
			} else {
				lastWorkloads = fp
				f.mu.Lock()
				f.resend = false
				f.mu.Unlock()
				f.log.Debug("workloads reported", "workloads", len(ws))
			}
		}
		if ok && (st != lastStatus || time.Since(lastSent) >= statusEvery) {
			if err := f.c.ReportStatus(ctx, f.host, st); err != nil {
				ok = false
				f.reportFailed("report status", err)
			} else {
				lastStatus, lastSent = st, time.Now()
			}
		}
		wait := statusEvery
		if ok {
			attempt = 0
		} else {
			wait = f.opts.Backoff(attempt)
			attempt++
		}
		retry.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-f.reportCh:
		case <-retry.C:
		}
		if !retry.Stop() {
			select {
			case <-retry.C:
			default:
			}
		}
	}
}

func (f *Follower) reportFailed(what string, err error) {
	if apiErrorStatus(err) == http.StatusUnprocessableEntity {
		f.log.Error(what+": the manager refused it", "err", err)
	} else {
		f.log.Debug(what, "err", err)
	}
}

// hostStatus is the status to report; f.mu is held.
func (f *Follower) hostStatus() api.HostStatus {
	health := "ok"
	if f.status.Error != "" && f.status.Connected {
		health = f.status.Error
	}
	return api.HostStatus{Realized: f.status.Realized, Health: health, Version: f.opts.Version}
}

// localWorkloads are the agent's registrations as the manager takes
// them, sorted, with a fingerprint to tell a change.
func (f *Follower) localWorkloads() ([]api.HostWorkload, string) {
	regs := f.opts.Agent.Workloads()
	out := make([]api.HostWorkload, 0, len(regs))
	hostIP := ""
	if f.opts.HostIP.IsValid() {
		hostIP = f.opts.HostIP.String()
	}
	for _, r := range regs {
		out = append(out, api.HostWorkload{Host: f.host, Namespace: r.Namespace, Name: r.Name, Labels: r.Labels,
			IPs: r.IPs, Ports: r.Ports, HostIP: hostIP})
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Namespace+"/"+out[i].Name < out[j].Namespace+"/"+out[j].Name
	})
	fp, _ := json.Marshal(out)
	return out, string(fp)
}
