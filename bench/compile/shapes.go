package benchcompile

import (
	"fmt"
	"math/rand"
	"net/netip"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// RuleShape names one shape of rule set that a bank's policy takes and
// that the compiler must handle at a cost that grows with the rules.
type RuleShape string

// The shapes of GenerateShape.
const (
	// Distinct /32 ipBlocks: a partner allow-list or a blocklist.
	ShapeIPBlocks RuleShape = "ipblocks"
	// Overlapping CIDRs from /20 to /32, most with an except inside them:
	// nested ranges, as partner sites' allow-lists and blocklists are.
	ShapeExcept RuleShape = "except"
	// Egress and ingress to named ports, resolved per peer and subject.
	ShapeNamedPorts RuleShape = "namedports"
	// Peers chosen by namespace name or namespace label, many namespaces.
	ShapeNamespaces RuleShape = "namespaces"
	// Peers chosen by workload label selectors, many of them.
	ShapeSelectors RuleShape = "selectors"
)

// Shapes lists every shape, in the order benchmarks report them.
var Shapes = []RuleShape{ShapeIPBlocks, ShapeExcept, ShapeNamedPorts, ShapeNamespaces, ShapeSelectors}

// ShapeHost is the host the compile of a shape is for: the one that runs
// the selected workloads, as a standalone agent does.
const ShapeHost = "host-0"

// rulesPerPolicy is the size of the generated policies: the issue's
// reproducer applies policies of 1,000 rules each.
const rulesPerPolicy = 1000

// GenerateShape builds a set of about rules rules of one shape, in
// policies of 1,000 rules that select the workloads app=target on
// ShapeHost, plus a platform policy that every workload holds (the one
// PlatformPolicy makes). The inventory is the same at every size, so
// that what grows is the rules: 1,000 workloads (in 1,000 namespaces for
// ShapeNamespaces, in one otherwise), on other hosts but for the three
// targets.
func GenerateShape(shape RuleShape, rules int, seed int64) *policy.Set {
	return generateShape(shape, rules, 1000, seed)
}

// generateShape is GenerateShape with nw workloads (at least 3).
func generateShape(shape RuleShape, rules, nw int, seed int64) *policy.Set {
	r := rand.New(rand.NewSource(seed))
	s := &policy.Set{}
	nns := 1
	if shape == ShapeNamespaces {
		nns = nw
	}
	for i := 0; i < nns; i++ {
		s.Namespaces = append(s.Namespaces, &policy.Namespace{Name: fmt.Sprintf("ns-%05d", i),
			Labels: map[string]string{"team": fmt.Sprintf("t%03d", i%200), "env": []string{"prod", "dev"}[i%2]}})
	}
	for i := 0; i < nw; i++ {
		ip := uint32(10<<24) + uint32(i) + 1
		w := &policy.Workload{Namespace: s.Namespaces[i%nns].Name, Name: fmt.Sprintf("w-%05d", i),
			Labels: map[string]string{"app": fmt.Sprintf("app-%04d", i%1000), "version": fmt.Sprintf("v%d", i%3)},
			IPs:    []netip.Addr{netip.AddrFrom4([4]byte{byte(ip >> 24), byte(ip >> 16), byte(ip >> 8), byte(ip)})},
			Host:   fmt.Sprintf("host-%d", 1+i%50)}
		if i < 3 {
			w.Labels["app"], w.Host = "target", ShapeHost
		}
		for k := 0; k < 4; k++ {
			w.Ports = append(w.Ports, policy.NamedPort{Name: portNameOf((i*4 + k) % namedPool(rules)), Protocol: policy.TCP, Port: 8000 + (i*4+k)%1000})
		}
		s.Workloads = append(s.Workloads, w)
	}
	s.Policies = append(s.Policies, PlatformPolicy(53))
	for start := 0; start < rules; start += rulesPerPolicy {
		p := &policy.Policy{Name: fmt.Sprintf("%s-%03d", shape, start/rulesPerPolicy), Namespace: s.Namespaces[0].Name,
			Kind: "NetworkPolicy", Tier: policy.Application, Priority: 1000, Mode: policy.Enforce,
			Subject: policy.Subject{Workloads: sel("app", "target")}, Isolate: [2]bool{true, true}}
		for i := start; i < min(rules, start+rulesPerPolicy); i++ {
			d, rule := shapeRule(shape, r, i, rules, nns)
			rule.ID = fmt.Sprintf("%s-%d", shape, i)
			if d == policy.Egress {
				p.Egress = append(p.Egress, rule)
			} else {
				p.Ingress = append(p.Ingress, rule)
			}
		}
		s.Policies = append(s.Policies, p)
	}
	return s
}

// PlatformPolicy is the platform team's policy that every workload holds:
// DNS to the given port, and a denied range in front of everything else.
func PlatformPolicy(dnsPort int) *policy.Policy {
	return &policy.Policy{Name: "platform", Kind: "Policy", Tier: policy.Infrastructure, Mode: policy.Enforce,
		Subject: policy.Subject{Workloads: &policy.Selector{}},
		Ingress: []policy.Rule{{ID: "no-quarantine", Action: policy.Deny, Log: true,
			Peers: []policy.Peer{{CIDRs: []policy.CIDR{{Prefix: netip.MustParsePrefix("198.51.100.0/24")}}}}}},
		Egress: []policy.Rule{{ID: "dns", Action: policy.Allow, Services: []policy.Service{{Protocol: policy.UDP, Port: dnsPort}}}}}
}

func namedPool(rules int) int { return max(16, rules/10) }

func portNameOf(i int) string { return fmt.Sprintf("np-%d", i) }

func shapePort(i int) []policy.Service {
	return []policy.Service{{Protocol: policy.TCP, Port: 1024 + i%60000}}
}

// shapeRule is rule i of a shape: its direction and its peers and ports.
func shapeRule(shape RuleShape, r *rand.Rand, i, rules, nns int) (policy.Direction, policy.Rule) {
	rule := policy.Rule{Action: policy.Allow, Services: shapePort(i)}
	d := policy.Ingress
	switch shape {
	case ShapeIPBlocks:
		a := uint32(100<<24|64<<16) + uint32(i)
		rule.Peers = []policy.Peer{{CIDRs: []policy.CIDR{{Prefix: netip.PrefixFrom(addr4(a), 32)}}}}
	case ShapeExcept:
		rule.Peers = []policy.Peer{{CIDRs: []policy.CIDR{nestedCIDR(r, i)}}}
		if i%2 == 1 {
			d = policy.Egress
		}
	case ShapeNamedPorts:
		rule.Services = []policy.Service{{Protocol: policy.TCP, Name: portNameOf(r.Intn(namedPool(rules)))}}
		rule.Peers = []policy.Peer{{Workloads: sel("app", fmt.Sprintf("app-%04d", r.Intn(1000)))}}
		if i%2 == 1 {
			d = policy.Egress
		}
	case ShapeNamespaces:
		ns := policy.NamespaceMatch{Names: []string{fmt.Sprintf("ns-%05d", r.Intn(nns))}}
		if i%4 == 3 {
			ns = nsSel("team", fmt.Sprintf("t%03d", r.Intn(200)), "env", []string{"prod", "dev"}[r.Intn(2)])
		}
		rule.Peers = []policy.Peer{{Namespaces: ns}}
		if i%2 == 1 {
			d = policy.Egress
		}
	case ShapeSelectors:
		ws := sel("app", fmt.Sprintf("app-%04d", r.Intn(1000)), "version", fmt.Sprintf("v%d", r.Intn(3)))
		if i%3 == 2 {
			ws = &policy.Selector{MatchExpressions: []policy.Requirement{{Key: "app", Operator: "In",
				Values: []string{fmt.Sprintf("app-%04d", r.Intn(1000)), fmt.Sprintf("app-%04d", r.Intn(1000))}}}}
		}
		rule.Peers = []policy.Peer{{Namespaces: policy.NamespaceMatch{Selector: &policy.Selector{}}, Workloads: ws}}
		if i%2 == 1 {
			d = policy.Egress
		}
	default:
		panic("benchcompile: unknown shape " + string(shape))
	}
	return d, rule
}

func addr4(a uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
}

// nestedCIDR is rule i's CIDR in a blocklist of partner sites: every 64
// rules share a site, a /20 of 16.0.0.0/8, with the /20 itself, its four
// /22s and sixteen /24s, each with an except, and 43 small ranges (/28 to
// /32, some with an except) at random places in it. The ranges overlap
// and nest, as a site's allow-list and blocklist do; the nesting depth
// stays the same as the sites grow in number.
func nestedCIDR(r *rand.Rand, i int) policy.CIDR {
	site := uint32(16<<24) + uint32(i/64)<<12
	at := func(bits int) netip.Prefix {
		return netip.PrefixFrom(addr4(site|r.Uint32()&(1<<12-1)), bits).Masked()
	}
	switch j := i % 64; {
	case j == 0:
		return policy.CIDR{Prefix: netip.PrefixFrom(addr4(site), 20), Except: []netip.Prefix{at(24), at(26)}}
	case j <= 4:
		p := netip.PrefixFrom(addr4(site|uint32(j-1)<<10), 22)
		return policy.CIDR{Prefix: p, Except: []netip.Prefix{within(r, p, 25)}}
	case j <= 20:
		p := netip.PrefixFrom(addr4(site|uint32(j-5)<<8), 24)
		return policy.CIDR{Prefix: p, Except: []netip.Prefix{within(r, p, 28)}}
	default:
		p := at(28 + r.Intn(5))
		c := policy.CIDR{Prefix: p}
		if p.Bits() <= 30 && r.Intn(2) == 0 {
			c.Except = []netip.Prefix{within(r, p, 31+r.Intn(2))}
		}
		return c
	}
}

// within is a random prefix of length bits inside p.
func within(r *rand.Rand, p netip.Prefix, bits int) netip.Prefix {
	b := p.Addr().As4()
	base := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	off := r.Uint32() & (1<<(32-p.Bits()) - 1)
	return netip.PrefixFrom(addr4(base|off), bits).Masked()
}
