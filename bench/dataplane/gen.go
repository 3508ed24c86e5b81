// Package benchdataplane measures the kernel dataplane (issue 3, "Speed"):
// new-connection rate (like netperf TCP_CRR, 1 and 8 clients) and bulk
// throughput between two workload namespaces attached to a throwaway host
// namespace, with no firewall, with conntrack only, with linear iptables
// rules and with Bulkhead's nftables dataplane, all in one run and
// interleaved in rounds, and reports medians and ratios. Run
//
//	BULKHEAD_BENCH=1 go test ./bench/dataplane -run TestFigures -v -timeout 60m
//
// README.md says what each number means; docs/benchmarks.md has the figures.
package benchdataplane

import (
	"fmt"
	"math/rand"
	"net/netip"

	benchcompile "github.com/bulkhead-dev/bulkhead/bench/compile"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// The test pair: a client and a server workload on the bench host. Their
// addresses lie outside the generated inventory (10.0.0.1 upwards).
var (
	ClientAddr = netip.MustParseAddr("10.255.0.1")
	ServerAddr = netip.MustParseAddr("10.255.0.2")
)

// ServerPort is the port the server listens on and the pair's rule allows.
const ServerPort = 8080

// BenchHost is the host the compiled state is for: it holds its share of
// the generated workloads (about Workloads/Hosts) and the test pair.
const BenchHost = "host-0000"

// Sizes are the policy sizes measured: about 1,000, 10,000 and 100,000
// rules. The inventory grows with them up to 100,000 workloads; every host
// carries about 100 workloads, like a busy Kubernetes node.
var Sizes = []benchcompile.Shape{
	{Workloads: 10_000, Namespaces: 50, Hosts: 100, Rules: 1_000, Seed: 1},
	{Workloads: 100_000, Namespaces: 500, Hosts: 1000, Rules: 10_000, Seed: 1},
	{Workloads: 100_000, Namespaces: 500, Hosts: 1000, Rules: 100_000, Seed: 1},
}

// Generate builds the policy set of one size (bench/compile's generator)
// and adds the test pair: namespace "bench", workloads bench/client and
// bench/server on BenchHost, and a policy that isolates the server and
// allows the client to its port.
func Generate(sh benchcompile.Shape) *policy.Set {
	s := benchcompile.Generate(sh)
	s.Namespaces = append(s.Namespaces, &policy.Namespace{Name: "bench",
		Labels: map[string]string{"team": "t00", "env": "prod"}})
	for _, w := range []struct {
		name string
		addr netip.Addr
	}{{"client", ClientAddr}, {"server", ServerAddr}} {
		s.Workloads = append(s.Workloads, &policy.Workload{Namespace: "bench", Name: w.name, Host: BenchHost,
			Labels: map[string]string{"app": "bench-" + w.name, "tier": "api", "version": "v1"},
			IPs:    []netip.Addr{w.addr},
			Ports:  []policy.NamedPort{{Name: "http", Protocol: policy.TCP, Port: ServerPort}}})
	}
	s.Policies = append(s.Policies, &policy.Policy{Name: "bench-server", Namespace: "bench", Kind: "Policy",
		Tier: policy.Application, Priority: 100, Mode: policy.Enforce, Isolate: [2]bool{true, false},
		Subject: policy.Subject{Workloads: &policy.Selector{MatchLabels: map[string]string{"app": "bench-server"}}},
		Ingress: []policy.Rule{{ID: "bench/bench-server/from-client", Action: policy.Allow,
			Services: []policy.Service{{Protocol: policy.TCP, Port: ServerPort}},
			Peers: []policy.Peer{{Namespaces: policy.NamespaceMatch{Names: []string{"bench"}},
				Workloads: &policy.Selector{MatchLabels: map[string]string{"app": "bench-client"}}}}}}})
	return s
}

// CountRules counts the rules of every policy in s.
func CountRules(s *policy.Set) int {
	n := 0
	for _, p := range s.Policies {
		n += len(p.Ingress) + len(p.Egress)
	}
	return n
}

// IptablesRules writes s as a linear iptables FORWARD chain in
// iptables-restore form: conntrack's established/related accept first,
// then one ACCEPT per policy rule, and the test pair's allow last, so that
// every new connection of the pair walks the whole chain (the worst case,
// which is also where a newly added rule lands). Each rule matches one
// source /32, one destination /32 (addresses of the inventory), the
// protocol and the port (or range) of the policy rule: the cheapest form a
// linear rule can take. A faithful translation of a selector needs a rule
// per member pair or an ipset, so this baseline flatters iptables.
func IptablesRules(s *policy.Set, seed int64) string {
	r := rand.New(rand.NewSource(seed))
	var addrs []netip.Addr
	for _, w := range s.Workloads {
		for _, a := range w.IPs {
			if a.Is4() && a != ClientAddr && a != ServerAddr {
				addrs = append(addrs, a)
			}
		}
	}
	var b []byte
	b = append(b, "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"...)
	b = append(b, "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"...)
	for _, p := range s.Policies {
		for _, d := range []policy.Direction{policy.Ingress, policy.Egress} {
			for _, rule := range p.Rules(d) {
				if rule.ID == "bench/bench-server/from-client" {
					continue
				}
				src, dst := addrs[r.Intn(len(addrs))], addrs[r.Intn(len(addrs))]
				b = fmt.Appendf(b, "-A FORWARD -s %v/32 -d %v/32%s -j %s\n", src, dst, match(rule), target(rule.Action))
			}
		}
	}
	b = fmt.Appendf(b, "-A FORWARD -s %v/32 -d %v/32 -p tcp -m tcp --dport %d -j ACCEPT\nCOMMIT\n", ClientAddr, ServerAddr, ServerPort)
	return string(b)
}

// match is the protocol and port part of a rule's iptables form: its
// first service; a named port becomes the port the generator declares.
func match(rule policy.Rule) string {
	if len(rule.Services) == 0 {
		return ""
	}
	sv := rule.Services[0]
	proto := map[policy.Protocol]string{policy.TCP: "tcp", policy.UDP: "udp", policy.SCTP: "sctp", policy.ICMP: "icmp"}[sv.Protocol]
	if proto == "" {
		return ""
	}
	port := sv.Port
	switch sv.Name {
	case "http":
		port = 8080
	case "metrics":
		port = 9090
	}
	switch {
	case proto == "icmp" || port == 0:
		return " -p " + proto
	case sv.EndPort > port:
		return fmt.Sprintf(" -p %s -m %s --dport %d:%d", proto, proto, port, sv.EndPort)
	}
	return fmt.Sprintf(" -p %s -m %s --dport %d", proto, proto, port)
}

func target(a policy.Action) string {
	if a == policy.Deny || a == policy.Reject {
		return "DROP"
	}
	return "ACCEPT"
}
