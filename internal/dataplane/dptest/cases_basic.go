package dptest

import "github.com/bulkhead-dev/bulkhead/internal/policy"

func basicCases() []Case {
	return append(append(selectionCases(), actionCases()...), protocolCases()...)
}

// selectionCases: which connections a rule selects: ports, ranges, named ports, peers.
func selectionCases() []Case {
	return []Case{
		{"NoPolicyAllows", func(w *World) {
			web, db, _ := cast(w)
			w.Apply("")
			w.Expect(web, db.V4(), "tcp/80", Connected)
			w.Expect(db, web.V4(), "udp/53", Connected)
			w.Expect(web, db.V4(), "icmp", Connected)
		}},
		{"DefaultDeny", func(w *World) {
			web, db, _ := cast(w)
			w.Apply(denyAll)
			w.Expect(web, db.V4(), "tcp/80", Dropped)
			w.Expect(db, web.V4(), "udp/53", Dropped)
			w.Expect(web, db.V4(), "icmp", Dropped)
		}},
		{"AllowOnePort", func(w *World) {
			web, db, other := cast(w)
			w.Apply(denyIngress + `---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress:
    - name: from-web
      action: allow
      from: [{selector: {matchLabels: {app: web}}}]
      services: [{protocol: tcp, port: 5432}]
`)
			w.Expect(web, db.V4(), "tcp/5432", Connected)
			w.Expect(web, db.V4(), "tcp/5433", Dropped)
			w.Expect(other, db.V4(), "tcp/5432", Dropped)
		}},
		{"PortRange", func(w *World) {
			web, db, _ := cast(w)
			w.Apply(denyIngress + `---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress: [{action: allow, services: [{protocol: tcp, port: 9000, endPort: 9010}]}]
`)
			w.Expect(web, db.V4(), "tcp/9000", Connected)
			w.Expect(web, db.V4(), "tcp/9010", Connected)
			w.Expect(web, db.V4(), "tcp/8999", Dropped)
			w.Expect(web, db.V4(), "tcp/9011", Dropped)
		}},
		{"NamedPort", func(w *World) {
			web, db, _ := cast(w)
			db2 := w.Add("app/db2", "app=db", "10.77.0.4", "pg/tcp/6432")
			w.Apply(denyIngress + `---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress: [{action: allow, services: [{protocol: tcp, port: pg}]}]
`)
			w.Expect(web, db.V4(), "tcp/5432", Connected)
			w.Expect(web, db.V4(), "tcp/6432", Dropped)
			w.Expect(web, db2.V4(), "tcp/6432", Connected)
			w.Expect(web, db2.V4(), "tcp/5432", Dropped)
		}},
		{"CIDRPeersForOutsideAddresses", func(w *World) {
			web, _, _ := cast(w)
			near := w.Outside("outside/near", "203.0.113.10 2001:db8::10")
			far := w.Outside("outside/far", "203.0.113.200 2001:db8::200")
			w.Apply(denyAll + `---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: web, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: web}}}
  egress:
    - {action: allow, to: [{cidr: 203.0.113.0/24, except: [203.0.113.128/25]}, {cidr: "2001:db8::/120"}], services: [{protocol: tcp, port: 443}]}
  ingress:
    - {action: allow, from: [{cidr: 203.0.113.0/25}, {cidr: "2001:db8::/123"}], services: [{protocol: tcp, port: 80}]}
`)
			w.Expect(web, near.V4(), "tcp/443", Connected)
			w.Expect(web, far.V4(), "tcp/443", Dropped)
			w.Expect(web, near.V6(), "tcp/443", Connected)
			w.Expect(web, near.V4(), "tcp/80", Dropped)
			w.Expect(near, web.V4(), "tcp/80", Connected)
			w.Expect(far, web.V4(), "tcp/80", Dropped)
			w.Expect(near, web.V6(), "tcp/80", Connected)
			w.Expect(far, web.V6(), "tcp/80", Dropped)
		}},
	}
}

// actionCases: what rules do: actions, tiers, both sides, walls, observe mode.
func actionCases() []Case {
	return []Case{
		{"DenyRejectEscalate", func(w *World) {
			web, db, _ := cast(w)
			w.Apply(`
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress:
    - {name: refuse, action: reject, services: [{protocol: tcp, port: 81}, {protocol: udp, port: 81}]}
    - {name: drop, action: deny, services: [{protocol: tcp, port: 82}]}
    - {name: hold, action: escalate, services: [{protocol: tcp, port: 83}]}
    - {name: rest, action: allow}
`)
			w.Expect(web, db.V4(), "tcp/80", Connected)
			w.Expect(web, db.V4(), "tcp/81", Refused)
			w.Expect(web, db.V4(), "udp/81", Refused)
			w.Expect(web, db.V6(), "tcp/81", Refused)
			w.Expect(web, db.V4(), "tcp/82", Dropped)
			w.Expect(web, db.V4(), "tcp/83", Dropped)
		}},
		{"EgressRejectDecidesFirst", func(w *World) {
			// Both sides deny: the source's egress is consulted first, so
			// its reject answers, although the destination would drop.
			web, db, _ := cast(w)
			w.Apply(`
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: web, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: web}}}
  egress: [{action: reject, services: [{protocol: tcp, port: 7000}]}]
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress: [{action: deny, services: [{protocol: tcp, port: 7000}, {protocol: tcp, port: 7001}]}, {action: reject, services: [{protocol: tcp, port: 7002}]}]
`)
			w.Expect(web, db.V4(), "tcp/7000", Refused)
			w.Expect(web, db.V4(), "tcp/7001", Dropped)
			w.Expect(web, db.V4(), "tcp/7002", Refused)
		}},
		{"TiersAndPass", func(w *World) {
			web, db, other := cast(w)
			w.Apply(`
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: guard-db}
spec:
  tier: environment
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress:
    - {name: web-decides-later, action: pass, from: [{selector: {matchLabels: {app: web}}}]}
    - {name: nobody-else, action: deny}
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: freeze}
spec:
  tier: emergency
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress: [{name: frozen-port, action: deny, services: [{protocol: tcp, port: 6000}]}]
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress: [{action: allow, services: [{protocol: tcp, port: 5432}, {protocol: tcp, port: 6000}]}]
  isolate: [ingress]
`)
			w.Expect(web, db.V4(), "tcp/5432", Connected) // passed on to the application tier
			w.Expect(other, db.V4(), "tcp/5432", Dropped) // the environment tier denies
			w.Expect(web, db.V4(), "tcp/6000", Dropped)   // emergency beats application
			w.Expect(web, db.V4(), "tcp/7000", Dropped)   // the application tier isolates
			w.Expect(db, web.V4(), "tcp/7000", Connected) // web has no policy
		}},
		{"BothSidesMustAllow", func(w *World) {
			web, db, other := cast(w)
			w.Apply(`
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: web, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: web}}}
  egress:
    - {action: allow, to: [{selector: {matchLabels: {app: db}}}], services: [{protocol: tcp, port: 5432}]}
    - {action: deny}
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress:
    - {action: allow, services: [{protocol: tcp, port: 5432}, {protocol: tcp, port: 8080}]}
    - {action: deny}
`)
			w.Expect(web, db.V4(), "tcp/5432", Connected)
			w.Expect(web, db.V4(), "tcp/8080", Dropped)    // db allows, web's egress does not
			w.Expect(web, other.V4(), "tcp/5432", Dropped) // web's egress denies
			w.Expect(other, db.V4(), "tcp/8080", Connected)
			w.Expect(other, db.V4(), "tcp/9090", Dropped) // db's ingress denies
		}},
		{"WallsDenyThoughRulesAllow", func(w *World) {
			buy := w.Add("trading/buy", "side=buy", "10.77.1.1", "")
			sell := w.Add("trading/sell", "side=sell", "10.77.1.2", "")
			buy2 := w.Add("trading/buy2", "side=buy", "10.77.1.3", "")
			w.Apply(`
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: buy-side}
spec: {selector: {matchLabels: {side: buy}}}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: sell-side}
spec: {selector: {matchLabels: {side: sell}}}
---
apiVersion: bulkhead.dev/v1
kind: Wall
metadata: {name: chinese-wall}
spec: {segments: [buy-side, sell-side]}
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: open}
spec:
  tier: emergency
  appliesTo: {selector: {}}
  ingress: [{action: allow}]
  egress: [{action: allow}]
`)
			w.Expect(buy, sell.V4(), "tcp/80", Dropped)
			w.Expect(sell, buy.V4(), "udp/53", Dropped)
			w.Expect(buy, buy2.V4(), "tcp/80", Connected)
		}},
		{"ObserveModeLetsThrough", func(w *World) {
			web, db, _ := cast(w)
			w.Apply(`
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: trial}
spec:
  tier: baseline
  mode: observe
  appliesTo: {selector: {}}
  ingress: [{name: would-deny, action: deny}]
`)
			v := w.Verdict(web, db.V4(), "tcp/80")
			if v.Ingress.WouldDeny == nil {
				w.T.Fatalf("case bug: the evaluator reports no would-deny: %+v", v)
			}
			w.Expect(web, db.V4(), "tcp/80", Connected)
			if lr, ok := w.Host.(LogReader); ok {
				found := false
				for _, e := range lr.Logs() {
					found = found || (e.WouldDeny && e.RuleID == v.Ingress.WouldDeny.ID)
				}
				if !found {
					w.T.Errorf("no would-deny log for %s", v.Ingress.WouldDeny.ID)
				}
			}
		}},
	}
}

// protocolCases: the protocols and address families.
func protocolCases() []Case {
	return []Case{
		{"IPv6", func(w *World) {
			web, db, other := cast(w)
			w.Apply(denyIngress + `---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress:
    - {action: reject, services: [{protocol: tcp, port: 81}, {protocol: udp, port: 55}]}
    - {action: reject, from: [{selector: {matchLabels: {app: other}}}], services: [{protocol: icmpv6}]}
    - {action: allow, services: [{protocol: tcp, port: 80}, {protocol: udp, port: 53}, {protocol: icmpv6, icmpType: 128}]}
`)
			w.Expect(web, db.V6(), "tcp/80", Connected)
			w.Expect(web, db.V6(), "tcp/82", Dropped)
			w.Expect(web, db.V6(), "tcp/81", Refused)
			w.Expect(web, db.V6(), "udp/53", Connected)
			w.Expect(web, db.V6(), "udp/55", Refused)
			w.Expect(web, db.V6(), "icmpv6", Connected)
			w.Expect(other, db.V6(), "icmpv6", Refused)
			w.Expect(db, web.V6(), "icmpv6", Dropped)
		}},
		{"UDP", func(w *World) {
			web, db, _ := cast(w)
			w.Apply(denyIngress + `---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress:
    - {action: reject, services: [{protocol: udp, port: 55}]}
    - {action: allow, services: [{protocol: udp, port: 53}]}
`)
			w.Expect(web, db.V4(), "udp/53", Connected)
			w.Expect(web, db.V4(), "udp/54", Dropped)
			w.Expect(web, db.V4(), "udp/55", Refused)
			w.Expect(web, db.V4(), "tcp/53", Dropped)
		}},
		{"ICMPEcho", func(w *World) {
			web, db, other := cast(w)
			w.Apply(denyIngress + `---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress:
    - {action: reject, from: [{selector: {matchLabels: {app: other}}}], services: [{protocol: icmp}]}
    - {action: allow, services: [{protocol: icmp, icmpType: 8}]}
`)
			w.Expect(web, db.V4(), "icmp", Connected)
			w.Expect(other, db.V4(), "icmp", Refused)
			w.Expect(db, web.V4(), "icmp", Dropped)
			w.Expect(web, db.V6(), "icmpv6", Dropped) // an icmp service does not cover ICMPv6
		}},
		{"SCTP", func(w *World) {
			w.RequireProtocol(policy.SCTP)
			web, db, _ := cast(w)
			w.Apply(denyIngress + `---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress: [{action: allow, services: [{protocol: sctp, port: 9999}]}]
`)
			w.Expect(web, db.V4(), "sctp/9999", Connected)
			w.Expect(web, db.V4(), "sctp/9998", Dropped)
			w.Expect(web, db.V4(), "tcp/9999", Dropped)
		}},
	}
}
