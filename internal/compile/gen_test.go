package compile

import (
	"fmt"
	"math/rand"
	"net/netip"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// gen draws random sets from small alphabets, so that selectors, CIDRs
// and named ports collide often.
type gen struct{ r *rand.Rand }

func (g gen) pick(s ...string) string { return s[g.r.Intn(len(s))] }

func (g gen) labels() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"app", "tier", "env"} {
		if g.r.Intn(3) > 0 {
			m[k] = g.pick("a", "b", "c")
		}
	}
	return m
}

func (g gen) selector() *policy.Selector {
	switch g.r.Intn(6) {
	case 0:
		return nil
	case 1:
		return &policy.Selector{}
	case 2:
		return &policy.Selector{MatchExpressions: []policy.Requirement{{Key: g.pick("app", "tier"),
			Operator: g.pick("In", "NotIn", "Exists", "DoesNotExist"), Values: []string{g.pick("a", "b")}}}}
	}
	s := &policy.Selector{MatchLabels: map[string]string{g.pick("app", "tier", "env"): g.pick("a", "b", "c")}}
	if g.r.Intn(3) == 0 {
		s.MatchLabels[g.pick("app", "tier", "env")] = g.pick("a", "b")
	}
	return s
}

func (g gen) nsMatch() policy.NamespaceMatch {
	switch g.r.Intn(4) {
	case 0:
		return policy.NamespaceMatch{Names: []string{g.pick("ns0", "ns1", "ns3")}}
	case 1:
		return policy.NamespaceMatch{Selector: &policy.Selector{MatchLabels: map[string]string{"env": g.pick("prod", "dev")}}}
	}
	return policy.NamespaceMatch{}
}

var testCIDRs = []policy.CIDR{
	{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Except: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/28")}},
	{Prefix: netip.MustParsePrefix("10.0.0.0/16")},
	{Prefix: netip.MustParsePrefix("0.0.0.0/0")},
	{Prefix: netip.MustParsePrefix("10.0.0.128/25")},
	{Prefix: netip.MustParsePrefix("fd00::/64"), Except: []netip.Prefix{netip.MustParsePrefix("fd00::/124")}},
	{Prefix: netip.MustParsePrefix("192.168.0.0/16")},
	{Prefix: netip.MustParsePrefix("::/0")},
}

func (g gen) cidrs() []policy.CIDR {
	n := 1 + g.r.Intn(2)
	var out []policy.CIDR
	for i := 0; i < n; i++ {
		out = append(out, testCIDRs[g.r.Intn(len(testCIDRs))])
	}
	return out
}

func (g gen) peer(segs []string) policy.Peer {
	switch g.r.Intn(6) {
	case 0:
		return policy.Peer{Any: true}
	case 1:
		return policy.Peer{Segment: segs[g.r.Intn(len(segs))]}
	case 2:
		return policy.Peer{CIDRs: g.cidrs()}
	}
	return policy.Peer{Namespaces: g.nsMatch(), Workloads: g.selector()}
}

func intp(v int) *int { return &v }

func (g gen) service() policy.Service {
	switch g.r.Intn(8) {
	case 0:
		return policy.Service{Protocol: policy.TCP}
	case 1:
		return policy.Service{Protocol: policy.TCP, Port: 8000, EndPort: 8100}
	case 2:
		return policy.Service{Protocol: g.pick2(policy.TCP, policy.UDP), Name: g.pick("http", "dns")}
	case 3:
		s := policy.Service{Protocol: g.pick2(policy.ICMP, policy.ICMPv6)}
		if g.r.Intn(2) == 0 {
			s.Type = intp(8)
		}
		if g.r.Intn(2) == 0 {
			s.Code = intp(g.r.Intn(2))
		}
		return s
	case 4:
		return policy.Service{Protocol: policy.UDP, Port: 53}
	case 5:
		return policy.Service{Protocol: policy.SCTP}
	}
	return policy.Service{Protocol: policy.TCP, Port: []int{80, 443, 8080}[g.r.Intn(3)]}
}

func (g gen) pick2(a, b policy.Protocol) policy.Protocol {
	if g.r.Intn(2) == 0 {
		return a
	}
	return b
}

func (g gen) rules(segs []string, pol string, d policy.Direction) []policy.Rule {
	var out []policy.Rule
	for i := g.r.Intn(4); i > 0; i-- {
		r := policy.Rule{ID: fmt.Sprintf("%s-%s-%d", pol, d, len(out)), Log: g.r.Intn(2) == 0,
			Action: []policy.Action{policy.Allow, policy.Deny, policy.Reject, policy.Pass, policy.Escalate}[g.r.Intn(5)]}
		for j := g.r.Intn(3); j > 0; j-- {
			r.Peers = append(r.Peers, g.peer(segs))
		}
		for j := g.r.Intn(3); j > 0; j-- {
			r.Services = append(r.Services, g.service())
		}
		out = append(out, r)
	}
	return out
}

// set draws a whole random set with nw workloads and np policies.
func (g gen) set(nw, np int) *policy.Set {
	s := &policy.Set{}
	for i := 0; i < 3; i++ {
		s.Namespaces = append(s.Namespaces, &policy.Namespace{Name: fmt.Sprintf("ns%d", i),
			Labels: map[string]string{"env": g.pick("prod", "dev")}})
	}
	for i := 0; i < nw; i++ {
		s.Workloads = append(s.Workloads, g.workload(i))
	}
	segs := []string{"s0", "s1", "s2"}
	for _, n := range segs {
		seg := &policy.Segment{Name: n, Namespaces: g.nsMatch(), Workloads: g.selector()}
		if g.r.Intn(2) == 0 {
			seg.CIDRs = g.cidrs()
		}
		s.Segments = append(s.Segments, seg)
	}
	for i := 0; i < np; i++ {
		s.Policies = append(s.Policies, g.policy(i, segs))
	}
	if g.r.Intn(2) == 0 {
		s.Walls = append(s.Walls, &policy.Wall{Name: "w", Segments: []string{"s0", g.pick("s1", "s2")}})
	}
	if g.r.Intn(3) == 0 {
		s.ConflictClasses = append(s.ConflictClasses, &policy.ConflictClass{Name: "cc",
			Subjects: g.pick("", "s1"), Datasets: []policy.Dataset{{Name: "d", Segment: "s2"}}})
	}
	return s
}

func (g gen) workload(i int) *policy.Workload {
	w := &policy.Workload{Namespace: g.pick("ns0", "ns1", "ns2", "ns3"), Name: fmt.Sprintf("w%d", i),
		Labels: g.labels(), Host: g.pick("h1", "h2")}
	w.IPs = append(w.IPs, netip.AddrFrom4([4]byte{10, 0, 0, byte(i*7 + 1)}))
	if g.r.Intn(3) == 0 {
		w.IPs = append(w.IPs, netip.MustParseAddr(fmt.Sprintf("fd00::%x", i*5+1)))
	}
	if g.r.Intn(2) == 0 {
		w.Ports = append(w.Ports, policy.NamedPort{Name: "http", Protocol: policy.TCP, Port: []int{80, 8080}[g.r.Intn(2)]})
	}
	if g.r.Intn(3) == 0 {
		w.Ports = append(w.Ports, policy.NamedPort{Name: "dns", Protocol: policy.UDP, Port: 53})
	}
	return w
}

func (g gen) policy(i int, segs []string) *policy.Policy {
	p := &policy.Policy{Name: fmt.Sprintf("p%d", i), Kind: "Policy", Tier: policy.Tier(g.r.Intn(5)),
		Priority: g.r.Intn(3), Mode: policy.Enforce}
	if g.r.Intn(3) == 0 {
		p.Namespace = g.pick("ns0", "ns1", "ns3")
	}
	if g.r.Intn(5) == 0 {
		p.Mode = policy.Observe
	}
	if g.r.Intn(4) == 0 {
		p.Subject.Segment = segs[g.r.Intn(len(segs))]
	} else {
		p.Subject.Namespaces, p.Subject.Workloads = g.nsMatch(), g.selector()
	}
	p.Isolate = [2]bool{g.r.Intn(3) == 0, g.r.Intn(4) == 0}
	p.Ingress = g.rules(segs, p.Name, policy.Ingress)
	p.Egress = g.rules(segs, p.Name, policy.Egress)
	return p
}

// endpoint draws a workload address or an outside one.
func (g gen) endpoint(s *policy.Set) policy.Endpoint {
	if g.r.Intn(3) > 0 && len(s.Workloads) > 0 {
		w := s.Workloads[g.r.Intn(len(s.Workloads))]
		return policy.Endpoint{Addr: w.IPs[g.r.Intn(len(w.IPs))], Workload: w}
	}
	addrs := []string{"10.0.0.3", "10.0.0.200", "10.0.1.1", "10.9.0.1", "192.168.1.1", "8.8.8.8",
		"fd00::1:0", "fd00::3", "2001:db8::1", "10.0.0.130"}
	return policy.Endpoint{Addr: netip.MustParseAddr(addrs[g.r.Intn(len(addrs))])}
}

func (g gen) probe(s *policy.Set, byAddr map[netip.Addr]*policy.Workload) policy.Probe {
	p := policy.Probe{From: g.endpoint(s), To: g.endpoint(s)}
	for _, ep := range []*policy.Endpoint{&p.From, &p.To} {
		ep.Workload = byAddr[ep.Addr] // an outside pick may hit a workload address
	}
	p.Protocol = []policy.Protocol{policy.TCP, policy.UDP, policy.ICMP, policy.ICMPv6, policy.SCTP, 47}[g.r.Intn(6)]
	switch p.Protocol {
	case policy.ICMP, policy.ICMPv6:
		p.Port = []int{8 << 8, 8<<8 | 1, 0, 3<<8 | 1}[g.r.Intn(4)]
	case 47:
		p.Port = 0
	default:
		p.Port = []int{53, 80, 443, 8080, 8050, 8100, 8101, 9000, 1}[g.r.Intn(9)]
	}
	return p
}
