package policy_test

import (
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/load"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

const inventory = `
namespaces:
  - {name: a, labels: {team: alpha}}
  - {name: b, labels: {team: beta}}
workloads:
  - {namespace: a, name: web, labels: {app: web}, ips: [10.0.0.1, "fd00::1"], ports: [{name: http, port: 8080, protocol: TCP}]}
  - {namespace: a, name: db, labels: {app: db}, ips: [10.0.0.2], ports: [{name: http, port: 9090, protocol: TCP}]}
  - {namespace: b, name: api, labels: {app: api}, ips: [10.0.1.1, "fd00::2"]}
`

func engine(t *testing.T, docs string) *policy.Engine {
	t.Helper()
	inv, errs := objects.DecodeInventory("inventory.yaml", mustDoc(t, inventory))
	if errs != nil {
		t.Fatal(errs.Err())
	}
	set, errs := load.Bytes("policy.yaml", []byte(docs))
	if errs != nil {
		t.Fatal(errs.Err())
	}
	set.Merge(inv)
	e, err := policy.NewEngine(set)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func verdict(t *testing.T, e *policy.Engine, from, to string, proto policy.Protocol, port int) policy.Verdict {
	t.Helper()
	f, err := e.Endpoint(from)
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Endpoint(to)
	if err != nil {
		t.Fatal(err)
	}
	return e.Evaluate(policy.Probe{From: f, To: d, Protocol: proto, Port: port})
}

type probe struct {
	from, to string
	proto    policy.Protocol
	port     int
	want     policy.Action
	rule     string // substring of the deciding rule id on the side that decided, "" for none
}

func check(t *testing.T, e *policy.Engine, probes []probe) {
	t.Helper()
	for _, p := range probes {
		v := verdict(t, e, p.from, p.to, p.proto, p.port)
		if v.Action != p.want {
			t.Errorf("%s -> %s %s/%d: got %s, want %s (egress %+v, ingress %+v)", p.from, p.to, p.proto, p.port, v.Action, p.want, v.Egress, v.Ingress)
			continue
		}
		if p.rule == "" {
			continue
		}
		got := ""
		for _, s := range []policy.Side{v.Ingress, v.Egress} {
			if s.Rule != nil && (s.Action == p.want || p.want == policy.Deny && s.Action == policy.Reject) {
				got = s.Rule.ID
			}
		}
		if !strings.Contains(got, p.rule) {
			t.Errorf("%s -> %s %s/%d: decided by %q, want a rule containing %q", p.from, p.to, p.proto, p.port, got, p.rule)
		}
	}
}

func TestNoPolicyAllows(t *testing.T) {
	e := engine(t, `
apiVersion: bulkhead.dev/v1
kind: Namespace
metadata: {name: c}
`)
	check(t, e, []probe{
		{"a/web", "a/db", policy.TCP, 5432, policy.Allow, ""},
		{"203.0.113.1", "b/api", policy.UDP, 53, policy.Allow, ""},
	})
}

func TestTiersPriorityAndPass(t *testing.T) {
	e := engine(t, `
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: baseline}
spec:
  tier: baseline
  appliesTo: {selector: {}}
  ingress: [{name: deny-all, action: deny}]
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: admin-pass}
spec:
  tier: environment
  priority: 10
  appliesTo: {namespaces: [a]}
  ingress:
    - {name: pass-web, action: pass, from: [{selector: {matchLabels: {app: web}}, namespaces: [a]}]}
    - {name: deny-b, action: reject, from: [{namespaceSelector: {matchLabels: {team: beta}}}]}
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: admin-allow}
spec:
  tier: environment
  priority: 20
  appliesTo: {namespaces: [a]}
  ingress:
    - {name: allow-all, action: allow}
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: a}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress:
    - {name: web-http, action: allow, from: [{selector: {matchLabels: {app: web}}}], services: [{protocol: tcp, port: http}]}
`)
	check(t, e, []probe{
		// web passes the environment tier; the application tier allows the
		// named port as the db declares it (9090), not as web does (8080).
		{"a/web", "a/db", policy.TCP, 9090, policy.Allow, "web-http"},
		{"a/web", "a/db", policy.TCP, 8080, policy.Deny, "deny-all"},
		// beta is rejected ahead of the allow of a later policy.
		{"b/api", "a/db", policy.TCP, 9090, policy.Deny, "deny-b"},
		// an outside address is neither web nor beta: the second admin policy allows.
		{"203.0.113.9", "a/web", policy.TCP, 1, policy.Allow, "allow-all"},
		// b has no admin policy: the baseline denies.
		{"a/web", "b/api", policy.TCP, 80, policy.Deny, "deny-all"},
	})
}

func TestIsolationAndDirections(t *testing.T) {
	e := engine(t, `
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: web-egress, namespace: a}
spec:
  appliesTo: {selector: {matchLabels: {app: web}}}
  isolate: [egress]
  egress:
    - {name: to-api, action: allow, to: [{namespaces: [b], selector: {}}], services: [{protocol: tcp, port: 8000, endPort: 8100}]}
    - {name: to-v6, action: allow, to: [{cidr: "fd00::/64", except: ["fd00::2/128"]}]}
`)
	check(t, e, []probe{
		{"a/web", "b/api", policy.TCP, 8050, policy.Allow, "to-api"},
		{"a/web", "b/api", policy.TCP, 8101, policy.Deny, "isolation"},
		{"a/web", "fd00::99", policy.UDP, 53, policy.Allow, "to-v6"},
		{"a/web", "fd00::2", policy.UDP, 53, policy.Deny, "isolation"},
		// ingress to web is not isolated
		{"b/api", "a/web", policy.TCP, 22, policy.Allow, ""},
	})
}

func TestObserveModeWouldDeny(t *testing.T) {
	e := engine(t, `
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: staged}
spec:
  mode: observe
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress:
    - {name: allow-web, action: allow, from: [{selector: {matchLabels: {app: web}}}]}
    - {name: deny-rest, action: deny}
`)
	v := verdict(t, e, "b/api", "a/db", policy.TCP, 5432)
	if v.Action != policy.Allow || v.Ingress.WouldDeny == nil || !strings.Contains(v.Ingress.WouldDeny.ID, "deny-rest") {
		t.Fatalf("observe mode: got %s, would deny %+v", v.Action, v.Ingress.WouldDeny)
	}
	v = verdict(t, e, "a/web", "a/db", policy.TCP, 5432)
	if v.Action != policy.Allow || v.Ingress.WouldDeny != nil {
		t.Fatalf("observe mode, allowed by the staged policy: got %s, would deny %+v", v.Action, v.Ingress.WouldDeny)
	}
}

func TestEscalateAndICMP(t *testing.T) {
	e := engine(t, `
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: p}
spec:
  appliesTo: {selector: {}}
  isolate: [ingress]
  ingress:
    - {name: ping, action: allow, services: [{protocol: icmp, icmpType: 8}]}
    - {name: ask, action: escalate, from: [{cidr: 198.51.100.0/24}]}
`)
	check(t, e, []probe{
		{"a/web", "a/db", policy.ICMP, 8 << 8, policy.Allow, "ping"},
		{"a/web", "a/db", policy.ICMP, 13 << 8, policy.Deny, "isolation"},
		{"198.51.100.4", "a/db", policy.TCP, 22, policy.Escalate, "ask"},
	})
}

func TestWallDeniesAheadOfTiers(t *testing.T) {
	e := engine(t, `
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: alpha}
spec: {namespaces: [a], selector: {}}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: beta}
spec: {namespaceSelector: {matchLabels: {team: beta}}, selector: {}}
---
apiVersion: bulkhead.dev/v1
kind: Wall
metadata: {name: ab}
spec: {segments: [alpha, beta]}
`)
	v := verdict(t, e, "b/api", "a/web", policy.TCP, 80)
	if v.Action != policy.Deny || v.Wall == nil {
		t.Fatalf("got %s, wall %v", v.Action, v.Wall)
	}
	breaches, err := policy.ProveWalls(e.Set())
	if err != nil || len(breaches) != 2 {
		t.Fatalf("ProveWalls: %v, %d breaches, want 2 (no policy: everything is allowed)", err, len(breaches))
	}
}
