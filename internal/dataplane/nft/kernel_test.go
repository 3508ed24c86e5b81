package nft

import (
	"bytes"
	"context"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

func TestMain(m *testing.M) {
	_ = netns.DeleteAll(prefix)
	m.Run()
}

const basePolicy = `
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: b-in, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: b}}}
  isolate: [ingress]
  ingress:
    - name: web
      action: allow
      from: [{selector: {matchLabels: {app: a}}}]
      services: [{protocol: tcp, port: 8080}]
      log: true
    - name: refuse
      action: reject
      services: [{protocol: tcp, port: 8081}]
    - name: dns
      action: allow
      services: [{protocol: udp, port: 5353}]
    - name: ping
      action: allow
      services: [{protocol: icmp}, {protocol: icmpv6}]
`

// The policy is enforced between real sockets: allowed, denied (silently
// dropped) and rejected connections, TCP, UDP and ICMP, IPv4 and IPv6.
func TestEnforce(t *testing.T) {
	h := newTestHost(t, "a", "b", "c")
	a, b, c := h.wls["a"], h.wls["b"], h.wls["c"]
	for _, p := range []int{8080, 8081, 9000} {
		b.listen(t, "tcp", p)
	}
	b.listen(t, "udp", 5353)
	b.listen(t, "udp", 5354)
	c.listen(t, "tcp", 8080)
	d := h.newDataplane(Options{})
	h.apply(d, basePolicy)

	expectTCP(t, []tcpCase{
		{a, b.v4, 8080, resOK},
		{a, b.v6, 8080, resOK},
		{c, b.v4, 8080, resTimeout},
		{c, b.v6, 8080, resTimeout},
		{a, b.v4, 8081, resRefused},
		{a, b.v6, 8081, resRefused},
		{a, b.v4, 9000, resTimeout},
		{b, c.v4, 8080, resOK}, // c has no policy: everything allowed
		{b, c.v6, 8080, resOK},
	})
	if !a.tryUDP(t, b.v4, 5353) || !a.tryUDP(t, b.v6, 5353) {
		t.Errorf("udp a → b:5353 blocked, want allowed")
	}
	if a.tryUDP(t, b.v4, 5354) {
		t.Errorf("udp a → b:5354 allowed, want denied")
	}
	if !a.ping(t, b.v4) || !a.ping(t, b.v6) {
		t.Errorf("ping a → b blocked, want allowed")
	}
	cs, err := d.Counters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := cs.Rules["Policy/app/b-in/ingress/web"]; got.Packets == 0 {
		t.Errorf("counter of rule web = %+v, want packets; all: %+v", got, cs.Rules)
	}
	var buf bytes.Buffer
	if err := d.Dump(&buf); err != nil {
		t.Fatal(err)
	}
	t.Logf("dump:\n%s", buf.String())
	_ = dataplane.Desired{}
}
