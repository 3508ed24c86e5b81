package dptest

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// dbOpen allows web to reach db on tcp/5432 and tcp/80 and nothing else
// (for ingress); egress is open.
const dbOpen = denyIngress + `---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress:
    - {name: from-web, action: allow, from: [{selector: {matchLabels: {app: web}}}], services: [{protocol: tcp, port: 5432}, {protocol: tcp, port: 80}]}
`

func stateCases() []Case {
	return []Case{
		{"RepliesPassThoughEgressDenies", func(w *World) {
			web, db, _ := cast(w)
			w.Apply(dbOpen + `---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db-quiet, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  egress: [{name: say-nothing, action: deny}]
`)
			w.Expect(web, db.V4(), "tcp/5432", Connected) // db's answers are replies
			w.Expect(web, db.V6(), "tcp/5432", Connected)
			w.Expect(db, web.V4(), "tcp/5432", Dropped) // a new connection from db is not
		}},
		{"EstablishedSurvivesApply", func(w *World) {
			web, db, other := cast(w)
			w.Apply(dbOpen)
			c := w.Open(web, db.V4(), "tcp/5432")
			// A new policy that still allows the connection.
			w.Apply(dbOpen + `---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: extra, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress: [{action: allow, from: [{selector: {matchLabels: {app: other}}}], services: [{protocol: tcp, port: 9}]}]
`)
			if o, err := c.Exchange(w.ctx); err != nil || o != Connected {
				w.T.Errorf("established connection after an Apply that still allows it: %s %v", o, err)
			}
			w.Expect(other, db.V4(), "tcp/9", Connected) // the change took effect
		}},
		{"PolicyChangeTakesEffect", func(w *World) {
			web, db, _ := cast(w)
			w.Apply(dbOpen)
			w.Expect(web, db.V4(), "tcp/5432", Connected)
			w.Expect(web, db.V4(), "tcp/6543", Dropped)
			w.Apply(denyIngress + `---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress: [{action: allow, services: [{protocol: tcp, port: 6543}]}]
`)
			w.Expect(web, db.V4(), "tcp/5432", Dropped)
			w.Expect(web, db.V4(), "tcp/6543", Connected)
			// A workload attached later is enforced on the next Apply.
			late := w.Add("app/late", "app=web", "10.77.0.9", "")
			w.Apply(dbOpen)
			w.Expect(late, db.V4(), "tcp/5432", Connected)
			w.Expect(late, db.V4(), "tcp/6543", Dropped)
		}},
		{"AntiSpoofing", func(w *World) {
			web, db, other := cast(w)
			w.Apply("")
			before := w.Counters().Spoofed.Packets
			w.Spoof(web, web.V4(), db.V4(), 53, Connected) // its own address: fine
			w.Spoof(web, other.V4(), db.V4(), 53, Dropped)
			w.Spoof(web, other.V6(), db.V6(), 53, Dropped)
			w.Spoof(web, netip.MustParseAddr("10.77.0.250"), db.V4(), 53, Dropped) // nobody's
			if after := w.Counters().Spoofed.Packets; after < before+3 {
				w.T.Errorf("spoofed packets counted %d -> %d, want at least 3 more", before, after)
			}
		}},
		{"CountersCountTheDecidingRule", func(w *World) {
			web, db, other := cast(w)
			w.Apply(dbOpen)
			allow := w.Verdict(web, db.V4(), "tcp/5432").Ingress.Rule
			deny := w.Verdict(other, db.V4(), "tcp/5432").Ingress.Rule
			if allow == nil || deny == nil {
				w.T.Fatal("case bug: the evaluator names no deciding rule")
			}
			before := w.Counters()
			w.Expect(web, db.V4(), "tcp/5432", Connected)
			w.Expect(other, db.V4(), "tcp/5432", Dropped)
			after := w.Counters()
			for _, id := range []string{allow.ID, deny.ID} {
				if after.Rules[id].Packets <= before.Rules[id].Packets {
					w.T.Errorf("counter of %s: %d -> %d packets, want more", id, before.Rules[id].Packets, after.Rules[id].Packets)
				}
			}
		}},
		{"NoWindowDuringUpdates", noWindow},
	}
}

// noWindow connects over and over, with a connection that the old and
// the new policy both allow, while the policy changes 20 times: not one
// attempt may fail.
func noWindow(w *World) {
	web, db, _ := cast(w)
	policies := [2]string{dbOpen, dbOpen + `---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: churn, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress:
    - {name: other-in, action: allow, from: [{selector: {matchLabels: {app: other}}}], services: [{protocol: tcp, port: 81}]}
    - {name: web-again, action: allow, from: [{selector: {matchLabels: {app: web}}}], services: [{protocol: tcp, port: 80}]}
`}
	w.Apply(policies[0])
	before := w.Counters()
	ctx, cancel := context.WithTimeout(w.ctx, 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var attempts int
	var failures []string
	var wg sync.WaitGroup
	stop := make(chan struct{})
	start := time.Now()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 5000 && ctx.Err() == nil; i++ {
			select {
			case <-stop:
				return
			default:
			}
			o, detail, err := w.Host.Try(ctx, Try{From: web.Name, To: db.V4(), Protocol: policy.TCP, Port: 80, Timeout: time.Second})
			mu.Lock()
			attempts++
			if err != nil || o != Connected {
				failures = append(failures, fmt.Sprintf("attempt %d at %s: %s (%s) %v", i, time.Since(start).Round(time.Millisecond), o, detail, err))
			}
			mu.Unlock()
		}
	}()
	var applied []string
	for i := 1; i <= 20; i++ {
		t0 := time.Since(start)
		if err := w.TryApply(policies[i%2]); err != nil {
			w.T.Error(err)
			break
		}
		applied = append(applied, fmt.Sprintf("%v-%v", t0.Round(time.Millisecond), time.Since(start).Round(time.Millisecond)))
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	switch {
	case len(failures) > 0:
		w.T.Errorf("%d of %d connections failed during 20 Applies: %s\n(the Applies ran %s)\ncounters that moved: %s",
			len(failures), attempts, strings.Join(failures, "; "), strings.Join(applied, " "), counterDelta(before, w.Counters()))
	case attempts < 20:
		w.T.Errorf("only %d connections during 20 Applies", attempts)
	default:
		w.T.Logf("%d connections during 20 Applies, none failed", attempts)
	}
}

// counterDelta lists the counters that moved from a to b.
func counterDelta(a, b dataplane.Counters) string {
	var out []string
	for id, c := range b.Rules {
		if d := c.Packets - a.Rules[id].Packets; d != 0 {
			out = append(out, fmt.Sprintf("%s +%d", id, d))
		}
	}
	for id, c := range b.Walls {
		if d := c.Packets - a.Walls[id].Packets; d != 0 {
			out = append(out, fmt.Sprintf("wall %s +%d", id, d))
		}
	}
	if d := b.Spoofed.Packets - a.Spoofed.Packets; d != 0 {
		out = append(out, fmt.Sprintf("spoofed +%d", d))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}
