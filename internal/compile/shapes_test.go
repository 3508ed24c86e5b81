package compile

import (
	"fmt"
	"math/rand"
	"net/netip"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// The shapes of rule set that bench/compile measures at scale — many
// distinct /32 ipBlocks, nested CIDRs with excepts, many named ports,
// many namespaces, many selectors — drawn small and checked against the
// reference evaluator and a fresh compile. A group here holds tens of
// rules naming tens of peers each, where gen's sets hold a few.

// shapeGen draws from larger alphabets than gen, so that a group's rules
// name many different peers and a peer's class matches many rules.
type shapeGen struct {
	gen
	cidrs []policy.CIDR // the pool rules draw from: /32s and nested ranges
}

func newShapeGen(seed int64) shapeGen {
	g := shapeGen{gen: gen{rand.New(rand.NewSource(seed))}}
	for i := 0; i < 24; i++ {
		g.cidrs = append(g.cidrs, policy.CIDR{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, byte(i * 3)}), 32)})
	}
	for i := 0; i < 16; i++ {
		bits := 24 + g.r.Intn(8)
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, byte(g.r.Intn(256))}), bits).Masked()
		c := policy.CIDR{Prefix: p}
		if bits < 31 && g.r.Intn(3) > 0 {
			b := p.Addr().As4()
			b[3] |= byte(g.r.Intn(1 << (32 - bits)))
			c.Except = []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4(b), bits+1+g.r.Intn(32-bits)).Masked()}
		}
		g.cidrs = append(g.cidrs, c)
	}
	return g
}

func (g shapeGen) portName() string { return fmt.Sprintf("np%d", g.r.Intn(12)) }

func (g shapeGen) shapePeer() policy.Peer {
	switch g.r.Intn(8) {
	case 0:
		return policy.Peer{Any: true}
	case 1, 2:
		return policy.Peer{CIDRs: []policy.CIDR{g.cidrs[g.r.Intn(len(g.cidrs))]}}
	case 3:
		return policy.Peer{Namespaces: policy.NamespaceMatch{Names: []string{fmt.Sprintf("ns%d", g.r.Intn(10))}}}
	case 4:
		return policy.Peer{Namespaces: policy.NamespaceMatch{Selector: &policy.Selector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", g.r.Intn(4))}}}}
	case 5:
		return policy.Peer{Namespaces: policy.NamespaceMatch{Selector: &policy.Selector{}},
			Workloads: &policy.Selector{MatchExpressions: []policy.Requirement{{Key: "app", Operator: g.pick("In", "NotIn"),
				Values: []string{fmt.Sprintf("a%d", g.r.Intn(8)), fmt.Sprintf("a%d", g.r.Intn(8))}}}}}
	}
	s := &policy.Selector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", g.r.Intn(8))}}
	if g.r.Intn(2) == 0 {
		s.MatchLabels["version"] = fmt.Sprintf("v%d", g.r.Intn(3))
	}
	return policy.Peer{Workloads: s}
}

func (g shapeGen) shapeService() policy.Service {
	switch g.r.Intn(5) {
	case 0, 1:
		return policy.Service{Protocol: policy.TCP, Name: g.portName()}
	case 2:
		return policy.Service{Protocol: g.pick2(policy.TCP, policy.UDP), Port: 8000 + g.r.Intn(4)}
	case 3:
		return policy.Service{Protocol: policy.TCP, Port: 8001, EndPort: 8003}
	}
	return policy.Service{Protocol: policy.TCP, Port: []int{80, 443, 8080}[g.r.Intn(3)]}
}

func (g shapeGen) shapePolicy(i int) *policy.Policy {
	p := &policy.Policy{Name: fmt.Sprintf("sp%d", i), Kind: "Policy", Tier: policy.Tier(g.r.Intn(5)),
		Priority: g.r.Intn(3), Mode: policy.Enforce, Isolate: [2]bool{g.r.Intn(2) == 0, g.r.Intn(3) == 0}}
	if g.r.Intn(6) == 0 {
		p.Mode = policy.Observe
	}
	if g.r.Intn(3) == 0 {
		p.Subject.Workloads = &policy.Selector{}
	} else {
		p.Subject.Workloads = &policy.Selector{MatchLabels: map[string]string{"app": fmt.Sprintf("a%d", g.r.Intn(8))}}
	}
	for _, d := range []policy.Direction{policy.Ingress, policy.Egress} {
		var rules []policy.Rule
		for j := 5 + g.r.Intn(30); j > 0; j-- {
			r := policy.Rule{ID: fmt.Sprintf("%s-%s-%d", p.Name, d, len(rules)),
				Action: []policy.Action{policy.Allow, policy.Allow, policy.Deny, policy.Reject, policy.Pass, policy.Escalate}[g.r.Intn(6)]}
			for k := 1 + g.r.Intn(2); k > 0; k-- {
				r.Peers = append(r.Peers, g.shapePeer())
			}
			for k := g.r.Intn(3); k > 0; k-- {
				r.Services = append(r.Services, g.shapeService())
			}
			rules = append(rules, r)
		}
		if d == policy.Ingress {
			p.Ingress = rules
		} else {
			p.Egress = rules
		}
	}
	return p
}

func (g shapeGen) shapeSet() *policy.Set {
	s := &policy.Set{}
	for i := 0; i < 10; i++ {
		s.Namespaces = append(s.Namespaces, &policy.Namespace{Name: fmt.Sprintf("ns%d", i),
			Labels: map[string]string{"team": fmt.Sprintf("t%d", i%4)}})
	}
	for i := 0; i < 20; i++ {
		w := &policy.Workload{Namespace: fmt.Sprintf("ns%d", g.r.Intn(11)), Name: fmt.Sprintf("w%d", i), Host: g.pick("h1", "h2"),
			Labels: map[string]string{"app": fmt.Sprintf("a%d", g.r.Intn(8)), "version": fmt.Sprintf("v%d", g.r.Intn(3))}}
		// Some workloads sit inside the CIDRs: CIDR peers match them too.
		w.IPs = []netip.Addr{netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)})}
		if i%4 == 0 {
			w.IPs[0] = netip.AddrFrom4([4]byte{100, 64, 0, byte(i*3 + 1)})
		}
		for k := g.r.Intn(4); k > 0; k-- {
			w.Ports = append(w.Ports, policy.NamedPort{Name: g.portName(), Protocol: policy.TCP, Port: 8000 + g.r.Intn(4)})
		}
		s.Workloads = append(s.Workloads, w)
	}
	for i := 3 + g.r.Intn(5); i > 0; i-- {
		s.Policies = append(s.Policies, g.shapePolicy(len(s.Policies)))
	}
	return s
}

// shapeProbe is a probe between workloads and addresses of the CIDR pool,
// on the ports the rules name.
func (g shapeGen) shapeProbe(s *policy.Set, addrs map[netip.Addr]*policy.Workload) policy.Probe {
	ep := func() policy.Endpoint {
		if g.r.Intn(2) == 0 {
			w := s.Workloads[g.r.Intn(len(s.Workloads))]
			return policy.Endpoint{Addr: w.IPs[0], Workload: w}
		}
		a := netip.AddrFrom4([4]byte{100, 64, 0, byte(g.r.Intn(256))})
		return policy.Endpoint{Addr: a, Workload: addrs[a]}
	}
	p := policy.Probe{From: ep(), To: ep(), Protocol: g.pick2(policy.TCP, policy.UDP)}
	p.Port = []int{80, 443, 8000, 8001, 8002, 8003, 8080, 9}[g.r.Intn(8)]
	return p
}

func checkShapeAgainstEngine(t *testing.T, g shapeGen, set *policy.Set, st *State, n int) {
	t.Helper()
	eng, err := policy.NewEngine(set)
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	addrs := byAddr(set)
	for i := 0; i < n; i++ {
		p := g.shapeProbe(set, addrs)
		if want, got := verdictString(eng.Evaluate(p)), verdictString(Lookup(st, p)); want != got {
			t.Fatalf("probe %s\n want %s\n  got %s", probeString(p), want, got)
		}
	}
}

// TestShapesMatchEngine compiles sets of the benchmarked shapes and checks
// them against the reference evaluator; then edits them through
// SetPolicies and checks each state against the evaluator and a fresh
// compile.
func TestShapesMatchEngine(t *testing.T) {
	for seed := int64(1); seed <= 12; seed++ {
		g := newShapeGen(seed)
		set := g.shapeSet()
		c, err := New(set, "", nil)
		if err != nil {
			t.Fatalf("seed %d: compile: %v", seed, err)
		}
		checkShapeAgainstEngine(t, g, set, c.State(), 400)
		for step := 0; step < 4; step++ {
			pols := append([]*policy.Policy(nil), set.Policies...)
			i := g.r.Intn(len(pols))
			switch k := g.r.Intn(3); {
			case k == 0 || len(pols) == 1:
				pols[i] = g.shapePolicy(100 + step)
			case k == 1:
				pols = append(pols[:i:i], pols[i+1:]...)
			default:
				p := *pols[i]
				p.Ingress = append(append([]policy.Rule(nil), p.Ingress...), g.shapePolicy(200+step).Egress...)
				pols[i] = &p
			}
			set.Policies = pols
			if err := c.SetPolicies(set); err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
			st := c.State()
			t.Run(fmt.Sprintf("%d/%d", seed, step), func(t *testing.T) {
				checkFresh(t, set, "", st)
				checkShapeAgainstEngine(t, g, set, st, 200)
			})
		}
	}
}

// TestPortEditRebuildsRegion changes the ports and actions of rules that
// every group holds, in sets of the benchmarked shapes: the groups are
// brought up to date in the edited region only, and the result equals a
// fresh compile and the evaluator.
func TestPortEditRebuildsRegion(t *testing.T) {
	for seed := int64(1); seed <= 10; seed++ {
		g := newShapeGen(seed)
		set := g.shapeSet()
		platform := &policy.Policy{Name: "platform", Kind: "Policy", Tier: policy.Infrastructure, Mode: policy.Enforce,
			Subject: policy.Subject{Workloads: &policy.Selector{}},
			Ingress: []policy.Rule{{ID: "ssh", Action: policy.Allow, Peers: []policy.Peer{g.shapePeer()},
				Services: []policy.Service{{Protocol: policy.TCP, Port: 8001}}}},
			Egress: []policy.Rule{{ID: "dns", Action: policy.Allow, Services: []policy.Service{{Protocol: policy.UDP, Port: 8000}}},
				{ID: "web", Action: policy.Deny, Peers: []policy.Peer{g.shapePeer()}, Services: []policy.Service{{Protocol: policy.TCP, Name: g.portName()}}}}}
		set.Policies = append([]*policy.Policy{platform}, set.Policies...)
		c, err := New(set, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		for step := 0; step < 4; step++ {
			p := snapshotOf(set.Policies[0]).p
			switch step {
			case 0:
				p.Egress[0].Services[0].Port = 8003
			case 1:
				p.Ingress[0].Services[0].Port = 8080
				p.Ingress[0].Action = policy.Deny
			case 2:
				p.Egress[1].Services = []policy.Service{{Protocol: policy.TCP, Port: 8002}}
			case 3:
				p.Egress[1].Action, p.Egress[0].Services[0].Protocol = policy.Pass, policy.TCP
			}
			set.Policies = append([]*policy.Policy{p}, set.Policies[1:]...)
			before := c.regionRebuilds
			if err := c.SetPolicies(set); err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
			if c.fullCompiles != 0 || c.regionRebuilds == before {
				t.Fatalf("seed %d step %d: full compiles %d, region rebuilds %d: want the region only", seed, step, c.fullCompiles, c.regionRebuilds-before)
			}
			st := c.State()
			t.Run(fmt.Sprintf("%d/%d", seed, step), func(t *testing.T) {
				checkFresh(t, set, "", st)
				checkShapeAgainstEngine(t, g, set, st, 300)
			})
		}
	}
}
