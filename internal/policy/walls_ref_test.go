package policy

import (
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"testing"
)

// proveWallsReference is ProveWalls as first written: every representative
// (none left out), every pair of members, every service class, through the
// evaluator. It is the oracle for the factored search.
func proveWallsReference(s *Set) ([]Breach, error) {
	if len(s.Walls) == 0 {
		return nil, nil
	}
	ext := withRepresentatives(s)
	e, err := NewEngine(ext)
	if err != nil {
		return nil, err
	}
	services := serviceClasses(ext)
	cidrs := allCIDRs(ext)
	members := map[string][]Endpoint{}
	for _, seg := range ext.Segments {
		members[seg.Name] = e.members(seg, ext.Workloads, cidrs)
	}
	var out []Breach
	for _, w := range s.Walls {
		for _, a := range w.Segments {
			for _, b := range w.Segments {
				if a == b {
					continue
				}
				if br, ok := referenceBreach(e, members[a], members[b], services); ok {
					br.Wall, br.From, br.To = w, a, b
					out = append(out, br)
				}
			}
		}
	}
	return out, nil
}

// withRepresentatives returns s with every representative, none left out.
func withRepresentatives(s *Set) *Set {
	ext := *s
	reps, made := representatives(s, nil, func(name string) *Namespace { return &Namespace{Name: name} })
	ext.Workloads = append(append([]*Workload(nil), s.Workloads...), reps...)
	ext.Namespaces = append(append([]*Namespace(nil), s.Namespaces...), made...)
	return &ext
}

func referenceBreach(e *Engine, from, to []Endpoint, services []service) (Breach, bool) {
	for _, f := range from {
		for _, t := range to {
			if f == t {
				continue
			}
			for _, sv := range services {
				p := Probe{From: f, To: t, Protocol: sv.proto, Port: sv.port}
				eg := e.Side(Egress, f.Workload, t, sv.proto, sv.port)
				in := e.Side(Ingress, t.Workload, f, sv.proto, sv.port)
				if a := Combine(eg.Action, in.Action); a == Allow || a == Escalate {
					return Breach{Probe: p, Verdict: Verdict{Action: a, Egress: eg, Ingress: in}}, true
				}
			}
		}
	}
	return Breach{}, false
}

// TestProveWallsMatchesReference draws random sets and compares, per wall
// and ordered pair of segments, whether ProveWalls and the reference find a
// breach; every breach ProveWalls reports must be one for Engine.Evaluate
// on the set without walls. BULKHEAD_LONG=1 draws ten times as many, larger (about 2 minutes).
func TestProveWallsMatchesReference(t *testing.T) {
	seeds, size := int64(400), 1
	if os.Getenv("BULKHEAD_LONG") != "" {
		seeds, size = 4000, 2
	}
	found, held := 0, 0
	for seed := int64(1); seed <= seeds; seed++ {
		g := wallGen{rand.New(rand.NewSource(seed))}
		set := g.set(2+g.r.Intn(10*size), 1+g.r.Intn(8*size))
		want, err := proveWallsReference(set)
		if err != nil {
			t.Fatalf("seed %d: reference: %v", seed, err)
		}
		got, err := ProveWalls(set)
		if err != nil {
			t.Fatalf("seed %d: ProveWalls: %v", seed, err)
		}
		if a, b := breachKeys(want), breachKeys(got); a != b {
			t.Fatalf("seed %d: breaches differ\n reference %s\n ProveWalls %s", seed, a, b)
		}
		checkBreaches(t, seed, set, got)
		found += len(got)
		for _, w := range set.Walls {
			held += len(w.Segments)*(len(w.Segments)-1) - countWall(got, w)
		}
	}
	if found < 100 || held < 100 {
		t.Fatalf("the generator is lopsided: %d breaches, %d segment pairs held; both should be common", found, held)
	}
}

func countWall(bs []Breach, w *Wall) int {
	n := 0
	for _, b := range bs {
		if b.Wall == w {
			n++
		}
	}
	return n
}

func breachKeys(bs []Breach) string {
	out := ""
	for _, b := range bs {
		out += fmt.Sprintf("[%s %s->%s]", b.Wall.Name, b.From, b.To)
	}
	return out
}

// checkBreaches judges every counterexample with the evaluator, walls
// removed, and checks that its ends are in the segments it names.
func checkBreaches(t *testing.T, seed int64, set *Set, bs []Breach) {
	t.Helper()
	open := withRepresentatives(set)
	open.Walls = nil
	e, err := NewEngine(open)
	if err != nil {
		t.Fatalf("seed %d: engine: %v", seed, err)
	}
	for _, b := range bs {
		v := e.Evaluate(b.Probe)
		if v.Action != Allow && v.Action != Escalate {
			t.Fatalf("seed %d: %s: the evaluator says %s", seed, b, v.Action)
		}
		if b.Probe.From == b.Probe.To || !e.InSegment(b.From, b.Probe.From) || !e.InSegment(b.To, b.Probe.To) {
			t.Fatalf("seed %d: %s: not a connection between two members of the segments", seed, b)
		}
	}
}

// wallGen draws random sets from small alphabets, so that selectors, CIDRs
// and named ports collide often (after internal/compile's generator), with
// walls always and denials often enough that walls also hold.
type wallGen struct{ r *rand.Rand }

func (g wallGen) pick(s ...string) string { return s[g.r.Intn(len(s))] }

func (g wallGen) labels() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"app", "tier", "env"} {
		if g.r.Intn(3) > 0 {
			m[k] = g.pick("a", "b", "c")
		}
	}
	return m
}

func (g wallGen) selector() *Selector {
	switch g.r.Intn(6) {
	case 0:
		return nil
	case 1:
		return &Selector{}
	case 2:
		return &Selector{MatchExpressions: []Requirement{{Key: g.pick("app", "tier"),
			Operator: g.pick("In", "NotIn", "Exists", "DoesNotExist"), Values: []string{g.pick("a", "b")}}}}
	}
	s := &Selector{MatchLabels: map[string]string{g.pick("app", "tier", "env"): g.pick("a", "b", "c")}}
	if g.r.Intn(3) == 0 {
		s.MatchLabels[g.pick("app", "tier", "env")] = g.pick("a", "b")
	}
	return s
}

func (g wallGen) nsMatch() NamespaceMatch {
	switch g.r.Intn(4) {
	case 0:
		return NamespaceMatch{Names: []string{g.pick("ns0", "ns1", "ns3")}}
	case 1:
		return NamespaceMatch{Selector: &Selector{MatchLabels: map[string]string{"env": g.pick("prod", "dev")}}}
	}
	return NamespaceMatch{}
}

var wallTestCIDRs = []CIDR{
	{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Except: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/28")}},
	{Prefix: netip.MustParsePrefix("10.0.0.0/16")},
	{Prefix: netip.MustParsePrefix("0.0.0.0/0")},
	{Prefix: netip.MustParsePrefix("10.0.0.128/25")},
	{Prefix: netip.MustParsePrefix("fd00::/64"), Except: []netip.Prefix{netip.MustParsePrefix("fd00::/124")}},
	{Prefix: netip.MustParsePrefix("192.168.0.0/16")},
}

func (g wallGen) cidrs() []CIDR {
	var out []CIDR
	for n := 1 + g.r.Intn(2); n > 0; n-- {
		out = append(out, wallTestCIDRs[g.r.Intn(len(wallTestCIDRs))])
	}
	return out
}

func (g wallGen) peer(segs []string) Peer {
	switch g.r.Intn(6) {
	case 0:
		return Peer{Any: true}
	case 1:
		return Peer{Segment: segs[g.r.Intn(len(segs))]}
	case 2:
		return Peer{CIDRs: g.cidrs()}
	}
	return Peer{Namespaces: g.nsMatch(), Workloads: g.selector()}
}

func (g wallGen) service() Service {
	intp := func(v int) *int { return &v }
	switch g.r.Intn(8) {
	case 0:
		return Service{Protocol: TCP}
	case 1:
		return Service{Protocol: TCP, Port: 8000, EndPort: 8100}
	case 2:
		return Service{Protocol: []Protocol{TCP, UDP}[g.r.Intn(2)], Name: g.pick("http", "dns")}
	case 3:
		s := Service{Protocol: []Protocol{ICMP, ICMPv6}[g.r.Intn(2)]}
		if g.r.Intn(2) == 0 {
			s.Type = intp(8)
			if g.r.Intn(2) == 0 {
				s.Code = intp(g.r.Intn(2))
			}
		}
		return s
	case 4:
		return Service{Protocol: UDP, Port: 53}
	case 5:
		return Service{Protocol: SCTP}
	}
	return Service{Protocol: TCP, Port: []int{80, 443, 8080}[g.r.Intn(3)]}
}

func (g wallGen) rules(segs []string, pol string, d Direction) []Rule {
	var out []Rule
	for i := g.r.Intn(4); i > 0; i-- {
		r := Rule{ID: fmt.Sprintf("%s-%s-%d", pol, d, len(out)),
			Action: []Action{Allow, Deny, Reject, Pass, Escalate, Deny}[g.r.Intn(6)]}
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

// set draws a whole random set with nw workloads and np policies, one or
// two walls, and often a baseline that denies what no rule allows.
func (g wallGen) set(nw, np int) *Set {
	s := &Set{}
	for i := 0; i < 3; i++ {
		s.Namespaces = append(s.Namespaces, &Namespace{Name: fmt.Sprintf("ns%d", i),
			Labels: map[string]string{"env": g.pick("prod", "dev")}})
	}
	for i := 0; i < nw; i++ {
		s.Workloads = append(s.Workloads, g.workload(i))
	}
	segs := []string{"s0", "s1", "s2", "s3"}
	for _, n := range segs {
		seg := &Segment{Name: n, Namespaces: g.nsMatch(), Workloads: g.selector()}
		if g.r.Intn(3) == 0 {
			seg.CIDRs = g.cidrs()
		}
		s.Segments = append(s.Segments, seg)
	}
	for i := 0; i < np; i++ {
		s.Policies = append(s.Policies, g.policy(i, segs))
	}
	if g.r.Intn(3) > 0 {
		s.Policies = append(s.Policies, &Policy{Name: "deny-all", Kind: "Policy", Tier: Baseline, Mode: Enforce,
			Subject: Subject{Workloads: &Selector{}}, Isolate: [2]bool{g.r.Intn(2) == 0, g.r.Intn(2) == 0},
			Ingress: []Rule{{ID: "deny-in", Action: Deny}}, Egress: []Rule{{ID: "deny-out", Action: Deny}}})
	}
	s.Walls = append(s.Walls, &Wall{Name: "w0", Segments: []string{"s0", g.pick("s1", "s2")}})
	if g.r.Intn(2) == 0 {
		s.Walls = append(s.Walls, &Wall{Name: "w1", Segments: []string{"s1", "s2", "s3"}})
	}
	if g.r.Intn(3) == 0 {
		s.ConflictClasses = append(s.ConflictClasses, &ConflictClass{Name: "cc",
			Subjects: g.pick("", "s1"), Datasets: []Dataset{{Name: "d", Segment: "s2"}}})
	}
	return s
}

func (g wallGen) workload(i int) *Workload {
	w := &Workload{Namespace: g.pick("ns0", "ns1", "ns2", "ns3"), Name: fmt.Sprintf("w%d", i),
		Labels: g.labels(), Host: g.pick("h1", "h2")}
	w.IPs = append(w.IPs, netip.AddrFrom4([4]byte{10, 0, 0, byte(i*7 + 1)}))
	if g.r.Intn(3) == 0 {
		w.IPs = append(w.IPs, netip.MustParseAddr(fmt.Sprintf("fd00::%x", i*5+1)))
	}
	if g.r.Intn(2) == 0 {
		w.Ports = append(w.Ports, NamedPort{Name: "http", Protocol: TCP, Port: []int{80, 8080}[g.r.Intn(2)]})
	}
	if g.r.Intn(3) == 0 {
		w.Ports = append(w.Ports, NamedPort{Name: "dns", Protocol: UDP, Port: 53})
	}
	return w
}

func (g wallGen) policy(i int, segs []string) *Policy {
	p := &Policy{Name: fmt.Sprintf("p%d", i), Kind: "Policy", Tier: Tier(g.r.Intn(5)),
		Priority: g.r.Intn(3), Mode: Enforce}
	if g.r.Intn(3) == 0 {
		p.Namespace = g.pick("ns0", "ns1", "ns3")
	}
	if g.r.Intn(5) == 0 {
		p.Mode = Observe
	}
	if g.r.Intn(4) == 0 {
		p.Subject.Segment = segs[g.r.Intn(len(segs))]
	} else {
		p.Subject.Namespaces, p.Subject.Workloads = g.nsMatch(), g.selector()
	}
	p.Isolate = [2]bool{g.r.Intn(3) == 0, g.r.Intn(3) == 0}
	p.Ingress = g.rules(segs, p.Name, Ingress)
	p.Egress = g.rules(segs, p.Name, Egress)
	return p
}
