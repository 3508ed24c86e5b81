// Package benchcompile measures the policy compiler (internal/compile) at
// the scale Bulkhead plans for: 100,000 workloads and 10,000 rules. Run
//
//	go test ./bench/compile -run TestFigures -v -timeout 30m   (BULKHEAD_BENCH=1)
//	go test ./bench/compile -bench . -benchmem -run '^$'
//
// and see docs/benchmarks.md for the figures measured.
package benchcompile

import (
	"fmt"
	"math/rand"
	"net/netip"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Shape sets the size of a generated inventory and policy set.
type Shape struct {
	Workloads  int
	Namespaces int
	Hosts      int
	Rules      int // approximate
	Seed       int64
}

// Full is the scale of the goal: 100,000 workloads, 10,000 rules.
var Full = Shape{Workloads: 100_000, Namespaces: 500, Hosts: 1000, Rules: 10_000, Seed: 1}

var tiers = []string{"web", "api", "db", "cache", "worker"}

// Generate builds a set with realistic label diversity: apps of 3–20
// replicas in namespaces of 50 teams and 3 environments; per-app policies
// (Kubernetes-style isolation, rules from apps, namespaces and tiers),
// per-namespace defaults, environment walls as deny rules, infrastructure
// allowances from segments, emergency CIDR blocks and a baseline.
func Generate(sh Shape) *policy.Set {
	r := rand.New(rand.NewSource(sh.Seed))
	s := &policy.Set{}
	envs := []string{"prod", "prod", "staging", "dev"}
	for i := 0; i < sh.Namespaces; i++ {
		ns := &policy.Namespace{Name: fmt.Sprintf("ns-%03d", i), Labels: map[string]string{
			"team": fmt.Sprintf("t%02d", i%50), "env": envs[r.Intn(len(envs))]}}
		if i%10 == 0 {
			ns.Labels["compliance"] = "pci"
		}
		s.Namespaces = append(s.Namespaces, ns)
	}
	type app struct{ ns, name, tier string }
	var apps []app
	ip := uint32(10 << 24)
	for n := 0; len(s.Workloads) < sh.Workloads; n++ {
		a := app{ns: s.Namespaces[r.Intn(sh.Namespaces)].Name, name: fmt.Sprintf("app%05d", n), tier: tiers[r.Intn(len(tiers))]}
		apps = append(apps, a)
		for k := 3 + r.Intn(18); k > 0 && len(s.Workloads) < sh.Workloads; k-- {
			ip++
			w := &policy.Workload{Namespace: a.ns, Name: fmt.Sprintf("%s-%d", a.name, k),
				Labels: map[string]string{"app": a.name, "tier": a.tier, "version": "v1"},
				IPs:    []netip.Addr{netip.AddrFrom4([4]byte{byte(ip >> 24), byte(ip >> 16), byte(ip >> 8), byte(ip)})},
				Host:   fmt.Sprintf("host-%04d", r.Intn(sh.Hosts)),
				Ports:  []policy.NamedPort{{Name: "http", Protocol: policy.TCP, Port: 8080}, {Name: "metrics", Protocol: policy.TCP, Port: 9090}}}
			if r.Intn(5) == 0 {
				w.IPs = append(w.IPs, netip.AddrFrom16([16]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(ip >> 24), byte(ip >> 16), byte(ip >> 8), byte(ip)}))
			}
			s.Workloads = append(s.Workloads, w)
		}
	}
	s.Segments = segments()
	rules := 0
	add := func(p *policy.Policy) {
		rules += len(p.Ingress) + len(p.Egress)
		s.Policies = append(s.Policies, p)
	}
	for _, p := range platformPolicies() {
		add(p)
	}
	for _, ns := range s.Namespaces {
		add(namespaceDefault(ns.Name))
	}
	for i := 0; rules < sh.Rules; i++ {
		a := apps[r.Intn(len(apps))]
		peer := apps[r.Intn(len(apps))]
		add(appPolicy(r, i, a.ns, a.name, a.tier, peer.ns, peer.name))
	}
	s.Walls = []*policy.Wall{{Name: "pci-from-dev", Segments: []string{"env-dev", "pci"}}}
	return s
}

func sel(kv ...string) *policy.Selector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &policy.Selector{MatchLabels: m}
}

func nsSel(kv ...string) policy.NamespaceMatch { return policy.NamespaceMatch{Selector: sel(kv...)} }

func segments() []*policy.Segment {
	var out []*policy.Segment
	for _, t := range tiers {
		out = append(out, &policy.Segment{Name: "tier-" + t, Workloads: sel("tier", t)})
	}
	for _, e := range []string{"prod", "staging", "dev"} {
		out = append(out, &policy.Segment{Name: "env-" + e, Namespaces: nsSel("env", e), Workloads: &policy.Selector{}})
	}
	for t := 0; t < 50; t++ {
		out = append(out, &policy.Segment{Name: fmt.Sprintf("team-t%02d", t), Namespaces: nsSel("team", fmt.Sprintf("t%02d", t)), Workloads: &policy.Selector{}})
	}
	out = append(out, &policy.Segment{Name: "pci", Namespaces: nsSel("compliance", "pci"), Workloads: &policy.Selector{}})
	for i := 0; i < 10; i++ {
		out = append(out, &policy.Segment{Name: fmt.Sprintf("partner-%d", i),
			CIDRs: []policy.CIDR{{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{203, 0, byte(i), 0}), 24)}}})
	}
	out = append(out, &policy.Segment{Name: "monitoring", Namespaces: policy.NamespaceMatch{Names: []string{"ns-000"}}, Workloads: &policy.Selector{}})
	return out
}

func tcp(port int) []policy.Service { return []policy.Service{{Protocol: policy.TCP, Port: port}} }

func platformPolicies() []*policy.Policy {
	block := &policy.Policy{Name: "block", Kind: "Policy", Tier: policy.Emergency, Mode: policy.Enforce,
		Subject: policy.Subject{Workloads: &policy.Selector{}}}
	for i := 0; i < 5; i++ {
		c := policy.CIDR{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, byte(i), 0}), 24)}
		block.Ingress = append(block.Ingress, policy.Rule{ID: fmt.Sprintf("block-in-%d", i), Action: policy.Deny, Log: true, Peers: []policy.Peer{{CIDRs: []policy.CIDR{c}}}})
		block.Egress = append(block.Egress, policy.Rule{ID: fmt.Sprintf("block-out-%d", i), Action: policy.Deny, Log: true, Peers: []policy.Peer{{CIDRs: []policy.CIDR{c}}}})
	}
	infra := &policy.Policy{Name: "infra", Kind: "Policy", Tier: policy.Infrastructure, Mode: policy.Enforce,
		Subject: policy.Subject{Workloads: &policy.Selector{}},
		Ingress: []policy.Rule{{ID: "monitoring", Action: policy.Allow, Peers: []policy.Peer{{Segment: "monitoring"}}, Services: []policy.Service{{Protocol: policy.TCP, Name: "metrics"}}}},
		Egress: []policy.Rule{{ID: "dns", Action: policy.Allow, Services: []policy.Service{{Protocol: policy.UDP, Port: 53}, {Protocol: policy.TCP, Port: 53}}},
			{ID: "icmp", Action: policy.Allow, Services: []policy.Service{{Protocol: policy.ICMP}}}}}
	env := &policy.Policy{Name: "env-separation", Kind: "Policy", Tier: policy.Environment, Mode: policy.Enforce,
		Subject: policy.Subject{Segment: "env-prod"},
		Ingress: []policy.Rule{{ID: "no-dev-to-prod", Action: policy.Deny, Log: true, Peers: []policy.Peer{{Segment: "env-dev"}}},
			{ID: "staging-to-prod-escalate", Action: policy.Escalate, Peers: []policy.Peer{{Segment: "env-staging"}}, Services: tcp(22)}}}
	pciObserve := &policy.Policy{Name: "pci-observe", Kind: "Policy", Tier: policy.Environment, Mode: policy.Observe,
		Subject: policy.Subject{Segment: "pci"},
		Ingress: []policy.Rule{{ID: "pci-only-from-pci", Action: policy.Deny, Peers: []policy.Peer{{Segment: "env-staging"}, {Segment: "env-prod"}}}}}
	baseline := &policy.Policy{Name: "baseline", Kind: "Policy", Tier: policy.Baseline, Mode: policy.Enforce,
		Subject: policy.Subject{Workloads: &policy.Selector{}},
		Ingress: []policy.Rule{{ID: "deny-world", Action: policy.Deny, Peers: []policy.Peer{{CIDRs: []policy.CIDR{{Prefix: netip.MustParsePrefix("0.0.0.0/0"),
			Except: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}}}}},
		Egress: []policy.Rule{{ID: "partners", Action: policy.Allow, Peers: []policy.Peer{{Segment: "partner-0"}, {Segment: "partner-1"}}, Services: tcp(443)}}}
	return []*policy.Policy{block, infra, env, pciObserve, baseline}
}

func namespaceDefault(ns string) *policy.Policy {
	return &policy.Policy{Name: "default", Namespace: ns, Kind: "NetworkPolicy", Tier: policy.Application, Priority: 1000,
		Mode: policy.Enforce, Subject: policy.Subject{Workloads: &policy.Selector{}}, Isolate: [2]bool{true, false},
		Ingress: []policy.Rule{{ID: ns + "/same-namespace", Action: policy.Allow,
			Peers: []policy.Peer{{Namespaces: policy.NamespaceMatch{Names: []string{ns}}}}}}}
}

// appPolicy lets an app be reached by one other app, by a team's
// namespaces or by a tier, and reach its database.
func appPolicy(r *rand.Rand, i int, ns, app, tier, peerNS, peerApp string) *policy.Policy {
	p := &policy.Policy{Name: fmt.Sprintf("%s-%d", app, i), Namespace: ns, Kind: "Policy", Tier: policy.Application,
		Priority: 100, Mode: policy.Enforce, Subject: policy.Subject{Workloads: sel("app", app)}, Isolate: [2]bool{true, false}}
	id := func(s string) string { return fmt.Sprintf("%s/%s/%s", ns, p.Name, s) }
	http := []policy.Service{{Protocol: policy.TCP, Name: "http"}}
	switch r.Intn(4) {
	case 0:
		p.Ingress = append(p.Ingress, policy.Rule{ID: id("from-app"), Action: policy.Allow, Services: http,
			Peers: []policy.Peer{{Namespaces: policy.NamespaceMatch{Names: []string{peerNS}}, Workloads: sel("app", peerApp)}}})
	case 1:
		p.Ingress = append(p.Ingress, policy.Rule{ID: id("from-team"), Action: policy.Allow, Services: http,
			Peers: []policy.Peer{{Namespaces: nsSel("team", fmt.Sprintf("t%02d", r.Intn(50)))}}})
	case 2:
		p.Ingress = append(p.Ingress, policy.Rule{ID: id("from-tier"), Action: policy.Allow, Services: tcp(8000 + r.Intn(100)),
			Peers: []policy.Peer{{Segment: "tier-" + tiers[r.Intn(len(tiers))]}}})
	default:
		p.Ingress = append(p.Ingress, policy.Rule{ID: id("from-app-range"), Action: policy.Allow,
			Services: []policy.Service{{Protocol: policy.TCP, Port: 7000, EndPort: 7010}},
			Peers:    []policy.Peer{{Workloads: sel("app", peerApp)}}})
	}
	if tier != "db" && r.Intn(2) == 0 {
		p.Egress = append(p.Egress, policy.Rule{ID: id("to-db"), Action: policy.Allow, Log: true, Services: tcp(5432),
			Peers: []policy.Peer{{Namespaces: policy.NamespaceMatch{Names: []string{ns}}, Workloads: sel("tier", "db")}}})
	}
	return p
}
