package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
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
		lastReport    time.Time // of the workloads
	)
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	for attempt := 0; ; {
		changed := f.opts.Agent.Changed()
		ws, fp := f.localWorkloads()
		f.mu.Lock()
		// Workloads left out are offered again every statusEvery: what
		// the manager refused (a name or address another host still
		// held) may be this host's by now.
		resend := f.resend || (len(f.unreported) > 0 && time.Since(lastReport) >= statusEvery)
		f.mu.Unlock()
		ok := true
		if fp != lastWorkloads || resend {
			if err := f.reportWorkloads(ctx, ws); err != nil {
				ok = false
				f.reportFailed("report workloads", err)
			} else {
				lastWorkloads, lastReport = fp, time.Now()
				f.mu.Lock()
				f.resend = false
				f.mu.Unlock()
				f.log.Debug("workloads reported", "workloads", len(ws))
			}
		}
		f.mu.Lock()
		st := f.hostStatus() // after the workloads: its health names those left out
		f.mu.Unlock()
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

// reportWorkloads sends the host's whole set, leaving out each workload
// that the manager would refuse, so that one bad registration never
// stops the host's others from being reported: first those the
// workload validator refuses (the manager's own), then those the
// manager names in a refusal (what the host may not claim). What is left
// out is logged and named in the host's health.
func (f *Follower) reportWorkloads(ctx context.Context, ws []api.HostWorkload) error {
	var left []string
	_, bad := objects.CheckHostWorkloads("workloads of host "+f.host, ws)
	invalid := map[int][]string{}
	for i, errs := range bad {
		for _, e := range errs {
			invalid[i] = append(invalid[i], e.Path+": "+e.Msg)
		}
	}
	ws, left = leaveOut(ws, invalid, left)
	_, err := f.c.ReportWorkloads(ctx, f.host, ws, nil, true)
	var ce *client.Error
	if errors.As(err, &ce) && ce.Status == http.StatusUnprocessableEntity {
		if named := refusedIndexes(ce.Details); len(named) > 0 {
			ws, left = leaveOut(ws, named, left)
			_, err = f.c.ReportWorkloads(ctx, f.host, ws, nil, true)
		}
	}
	if err != nil {
		return err
	}
	sort.Strings(left)
	f.mu.Lock()
	changed := strings.Join(left, "\n") != strings.Join(f.unreported, "\n")
	f.unreported = left
	f.mu.Unlock()
	if changed && len(left) > 0 {
		f.log.Error("workloads of this host not reported: the manager would refuse them", "workloads", strings.Join(left, "; "))
	}
	return nil
}

// leaveOut removes the workloads of bad (index → errors) from ws and
// names each, with why, in left.
func leaveOut(ws []api.HostWorkload, bad map[int][]string, left []string) ([]api.HostWorkload, []string) {
	if len(bad) == 0 {
		return ws, left
	}
	kept := make([]api.HostWorkload, 0, len(ws))
	for i, w := range ws {
		errs, ok := bad[i]
		if !ok {
			kept = append(kept, w)
			continue
		}
		why := make([]string, len(errs))
		for j, e := range errs {
			// The index changes with the set; the name says which.
			if k := strings.Index(e, "]."); strings.HasPrefix(e, "workloads[") && k > 0 {
				e = e[k+2:]
			}
			why[j] = e
		}
		left = append(left, w.Namespace+"/"+w.Name+": "+strings.Join(why, ", "))
	}
	return kept, left
}

// refusedIndexes reads the workloads a manager's refusal names
// ("workloads[3].ips[0]: …").
func refusedIndexes(details []string) map[int][]string {
	out := map[int][]string{}
	for _, d := range details {
		var i int
		if _, err := fmt.Sscanf(d, "workloads[%d]", &i); err == nil {
			out[i] = append(out[i], d)
		}
	}
	return out
}

// maxHealth bounds the health a host reports.
const maxHealth = 1024

// hostStatus is the status to report; f.mu is held. Health says first
// why the latest revision is not enforced, then which workloads are not
// reported, then the last failure.
func (f *Follower) hostStatus() api.HostStatus {
	var problems []string
	if f.status.Refused != "" {
		problems = append(problems, f.status.Refused)
	}
	if n := len(f.unreported); n > 0 {
		problems = append(problems, fmt.Sprintf("%d workloads not reported: %s", n, strings.Join(f.unreported, "; ")))
	}
	if f.status.Error != "" && f.status.Connected && f.status.Error != f.status.Refused {
		problems = append(problems, f.status.Error)
	}
	health := "ok"
	if len(problems) > 0 {
		health = strings.Join(problems, "; ")
		if len(health) > maxHealth {
			health = health[:maxHealth-3] + "..."
		}
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
