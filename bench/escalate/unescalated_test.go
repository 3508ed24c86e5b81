package benchescalate

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/escalate"
)

// plainPolicy is policyYAML without its escalating rule.
const plainPolicy = `
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db-in, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  isolate: [ingress]
  ingress:
    - name: open
      action: allow
      from: [{selector: {matchLabels: {app: a}}}]
      services: [{protocol: tcp, port: 5433}]
`

// TestUnescalatedCost: connections that no rule escalates cost nothing
// more when other rules of the policy escalate (and a Holder reads the
// queue): connection setup to the allowed port, on two hosts built alike
// but for the escalating rule, one connection to each in turn.
func TestUnescalatedCost(t *testing.T) {
	withEsc := newBed(t, escalate.AllowAll(0))
	without := newBedWith(t, escalate.AllowAll(0), plainPolicy)
	for _, b := range []*bed{withEsc, without} {
		serveOn(t, b, allowPort)
	}
	n := 600
	if bench() {
		n = 5000
	}
	// One connection to each host in turn, so that both meet the same
	// moment of this shared machine's load.
	var lEsc, lPlain []time.Duration
	for i := range 2 * n {
		b := withEsc
		if i%2 == 1 {
			b = without
		}
		d, err := connectN(b, allowPort, 1)
		if err != nil {
			t.Fatal(err)
		}
		if b == withEsc {
			lEsc = append(lEsc, d)
		} else {
			lPlain = append(lPlain, d)
		}
	}
	var sEsc, sPlain time.Duration
	for i := range lEsc {
		sEsc += lEsc[i]
		sPlain += lPlain[i]
	}
	t.Logf("%d connections each, alternating: with escalating rules p50 %v p99 %v, %.0f/s; without p50 %v p99 %v, %.0f/s; ratios p50 %.3f, rate %.3f",
		n, pct(lEsc, 50), pct(lEsc, 99), float64(n)/sEsc.Seconds(), pct(lPlain, 50), pct(lPlain, 99), float64(n)/sPlain.Seconds(),
		float64(pct(lEsc, 50))/float64(pct(lPlain, 50)), sPlain.Seconds()/sEsc.Seconds())
	if q := withEsc.holder.Counters().Queued; q != 0 {
		t.Errorf("the holder read %d packets: allowed connections were queued", q)
	}
}

// connectN opens and closes n connections from a to db's port, one after
// another, and returns how long they took.
func connectN(b *bed, port, n int) (time.Duration, error) {
	var d time.Duration
	err := b.a.Do(func() error {
		start := time.Now()
		for i := range n {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(b.db4, uint16(port)).String(), 3*time.Second)
			if err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
			c.Close()
		}
		d = time.Since(start)
		return nil
	})
	return d, err
}
