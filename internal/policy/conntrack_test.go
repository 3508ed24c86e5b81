package policy_test

import (
	"net/netip"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func TestConntrackRepliesPassNewConnectionsAreJudged(t *testing.T) {
	e := engine(t, `
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: zero-trust}
spec:
  tier: baseline
  appliesTo: {selector: {}}
  ingress: [{action: deny}]
  egress: [{action: deny}]
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: web-to-db, namespace: a}
spec:
  appliesTo: {selector: {}}
  ingress:
    - {action: allow, from: [{selector: {matchLabels: {app: web}}}], services: [{protocol: tcp, port: 5432}, {protocol: icmp, icmpType: 8}]}
  egress:
    - {action: allow, to: [{selector: {matchLabels: {app: db}}}], services: [{protocol: tcp, port: 5432}, {protocol: icmp, icmpType: 8}]}
`)
	ct := policy.NewConntrack(e)
	web, db := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	syn := policy.Packet{Src: web, Dst: db, Protocol: policy.TCP, SrcPort: 40000, DstPort: 5432}
	reply := policy.Packet{Src: db, Dst: web, Protocol: policy.TCP, SrcPort: 5432, DstPort: 40000}
	if a, _ := ct.Packet(reply); a != policy.Deny {
		t.Fatalf("a reply before its connection: %s, want deny", a)
	}
	if a, v := ct.Packet(syn); a != policy.Allow || v == nil {
		t.Fatalf("new connection: %s", a)
	}
	// The db's egress denies everything but its reply passes as established.
	if a, v := ct.Packet(reply); a != policy.Allow || v != nil {
		t.Fatalf("reply: %s %v, want allow without a new verdict", a, v)
	}
	// A new connection in the other direction is judged, and denied.
	back := policy.Packet{Src: db, Dst: web, Protocol: policy.TCP, SrcPort: 41000, DstPort: 5432}
	if a, _ := ct.Packet(back); a != policy.Deny {
		t.Fatalf("db -> web new connection: %s, want deny", a)
	}
	echo := policy.Packet{Src: web, Dst: db, Protocol: policy.ICMP, SrcPort: 7, DstPort: 8 << 8}
	echoReply := policy.Packet{Src: db, Dst: web, Protocol: policy.ICMP, SrcPort: 7, DstPort: 0}
	if a, _ := ct.Packet(echo); a != policy.Allow {
		t.Fatalf("ping: %s", a)
	}
	if !ct.Established(echoReply) {
		t.Fatal("echo reply not established")
	}
	ct.Forget(syn)
	if a, _ := ct.Packet(reply); a != policy.Deny {
		t.Fatalf("reply after the connection expired: %s, want deny", a)
	}
}
