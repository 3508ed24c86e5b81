package compile

import (
	"math/rand"
	"net/netip"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func wl(ns, name, ip string, labels map[string]string) *policy.Workload {
	return &policy.Workload{Namespace: ns, Name: name, Labels: labels, IPs: []netip.Addr{netip.MustParseAddr(ip)}, Host: "h1"}
}

func smallSet() *policy.Set {
	web := map[string]string{"app": "web"}
	db := map[string]string{"app": "db"}
	return &policy.Set{
		Namespaces: []*policy.Namespace{{Name: "shop", Labels: map[string]string{"env": "prod"}}},
		Workloads: []*policy.Workload{
			wl("shop", "web-1", "10.0.0.1", web), wl("shop", "web-2", "10.0.0.2", web),
			wl("shop", "db-1", "10.0.0.3", db),
		},
		Segments: []*policy.Segment{
			{Name: "frontends", Workloads: &policy.Selector{MatchLabels: web}},
			{Name: "databases", Workloads: &policy.Selector{MatchLabels: db}},
		},
		Policies: []*policy.Policy{{
			Name: "db", Kind: "Policy", Tier: policy.Application, Mode: policy.Enforce,
			Subject: policy.Subject{Workloads: &policy.Selector{MatchLabels: db}},
			Isolate: [2]bool{true, false},
			Ingress: []policy.Rule{{ID: "web-to-db", Action: policy.Allow, Log: true,
				Peers:    []policy.Peer{{Segment: "frontends"}},
				Services: []policy.Service{{Protocol: policy.TCP, Port: 5432}}}},
		}},
	}
}

func TestCompileSmall(t *testing.T) {
	st, err := Compile(smallSet(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := st.Stats()
	// web-1 and web-2 share an identity; db has its own; plus the one
	// outside identity ("world": no CIDR is named).
	if s.Identities != 3 || s.Addrs != 3 {
		t.Errorf("identities %d, addresses %d; want 3 and 3", s.Identities, s.Addrs)
	}
	// One ingress group (db); its wildcard (isolation deny) per protocol
	// bucket (other, tcp) and one segment-level entry for tcp/5432.
	if s.Entries[policy.Ingress] != 3 || s.Wildcard[policy.Ingress] != 2 || s.Entries[policy.Egress] != 0 {
		t.Errorf("entries %v (wildcard %v); want ingress 3 (2 wildcard), egress 0", s.Entries, s.Wildcard)
	}
	web, db := st.Identity(netip.MustParseAddr("10.0.0.1")), st.Identity(netip.MustParseAddr("10.0.0.3"))
	if st.Identity(netip.MustParseAddr("10.0.0.2")) != web || web == db {
		t.Errorf("identities web %d db %d", web, db)
	}
	attrs, _ := st.Identities.get(db)
	webAttrs, _ := st.Identities.get(web)
	k := TableKey{Level: 2, Bucket: st.Buckets[policy.TCP], Class: webAttrs.Class[policy.Ingress][2], Group: attrs.Group[policy.Ingress]}
	m, ok := st.Tables[policy.Ingress].get(k)
	if !ok || len(m) != 1 || m[0].Lo != 5432 || m[0].Hi != 5432 {
		t.Fatalf("segment entry %+v = %v, %v; want one range 5432", k, m, ok)
	}
	if o := st.Outcomes[m[0].Outcome]; o.Action != policy.Allow || st.Rules[o.Rule].ID != "web-to-db" || !st.Rules[o.Rule].Log {
		t.Errorf("outcome %+v", o)
	}
	probe := func(from, to string, port int) policy.Action {
		p := policy.Probe{From: policy.Endpoint{Addr: netip.MustParseAddr(from)}, To: policy.Endpoint{Addr: netip.MustParseAddr(to)},
			Protocol: policy.TCP, Port: port}
		return Lookup(st, p).Action
	}
	for _, c := range []struct {
		from, to string
		port     int
		want     policy.Action
	}{
		{"10.0.0.1", "10.0.0.3", 5432, policy.Allow},
		{"10.0.0.1", "10.0.0.3", 5433, policy.Deny},
		{"192.0.2.1", "10.0.0.3", 5432, policy.Deny},
		{"10.0.0.3", "10.0.0.1", 80, policy.Allow},
	} {
		if got := probe(c.from, c.to, c.port); got != c.want {
			t.Errorf("%s -> %s:%d = %s, want %s", c.from, c.to, c.port, got, c.want)
		}
	}
}

// TestAnyRuleHasNoClassEntries checks that a rule from any peer costs
// wildcard entries only, however many identities exist.
func TestAnyRuleHasNoClassEntries(t *testing.T) {
	set := smallSet()
	set.Policies[0].Ingress[0].Peers = nil
	for i := 0; i < 50; i++ {
		set.Workloads = append(set.Workloads, wl("shop", "x"+itoa(i), "10.0.1."+itoa(i+1), map[string]string{"app": "x" + itoa(i)}))
	}
	st, err := Compile(set, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := st.Stats(); s.Entries[policy.Ingress] != s.Wildcard[policy.Ingress] {
		t.Errorf("entries %d, wildcard %d: a rule from any must not create class entries", s.Entries[0], s.Wildcard[0])
	}
}

func itoa(i int) string { return netip.AddrFrom4([4]byte{0, 0, 0, byte(i)}).String()[6:] }

func TestWallIsGuardEntry(t *testing.T) {
	set := smallSet()
	set.Walls = []*policy.Wall{{Name: "split", Segments: []string{"frontends", "databases"}}}
	st, err := Compile(set, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	p := policy.Probe{From: policy.Endpoint{Addr: netip.MustParseAddr("10.0.0.1")}, To: policy.Endpoint{Addr: netip.MustParseAddr("10.0.0.3")},
		Protocol: policy.TCP, Port: 5432}
	if v := Lookup(st, p); v.Action != policy.Deny || v.Wall == nil || v.Wall.Name != "split" {
		t.Errorf("verdict %+v; want deny by wall split", v)
	}
	if n := st.Stats().Guards; n != 2 {
		t.Errorf("guard entries %d, want 2 (both directions)", n)
	}
}

func TestStableNumbering(t *testing.T) {
	set := smallSet()
	first, err := Compile(set, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	set.Workloads = append([]*policy.Workload{wl("shop", "new", "10.0.0.9", map[string]string{"app": "new"})}, set.Workloads...)
	second, err := Compile(set, "", first)
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"10.0.0.1", "10.0.0.3", "192.0.2.1"} {
		a := netip.MustParseAddr(ip)
		if first.Identity(a) != second.Identity(a) {
			t.Errorf("%s: identity %d became %d", ip, first.Identity(a), second.Identity(a))
		}
	}
	d := Diff(first, second)
	if len(d.Addrs) != 1 || len(d.Identities) != 1 || len(d.Tables[0])+len(d.Tables[1]) != 0 {
		t.Errorf("delta addrs %v identities %v tables %d; want one address and one identity",
			d.Addrs, d.Identities, len(d.Tables[0])+len(d.Tables[1]))
	}
}

// TestHostState checks that a host's state judges its own workloads' sides
// as the evaluator does and leaves the other hosts' identities to them.
func TestHostState(t *testing.T) {
	for seed := int64(1); seed <= 100; seed++ {
		g := gen{rand.New(rand.NewSource(seed))}
		set := g.set(4+g.r.Intn(12), 1+g.r.Intn(8))
		st, err := Compile(set, "h1", nil)
		if err != nil {
			t.Fatal(err)
		}
		eng, err := policy.NewEngine(set)
		if err != nil {
			t.Fatal(err)
		}
		addrs := byAddr(set)
		for i := 0; i < 200; i++ {
			p := g.probe(set, addrs)
			want, got := eng.Evaluate(p), Lookup(st, p)
			for _, side := range []struct {
				w         *policy.Workload
				want, got policy.Side
			}{{p.From.Workload, want.Egress, got.Egress}, {p.To.Workload, want.Ingress, got.Ingress}} {
				// A remote workload whose identity is also local is judged
				// here too, rightly: the verdict depends on the identity.
				if side.got.Reason == "remote" {
					if side.w == nil || side.w.Host == "h1" {
						t.Fatalf("seed %d: %s: local side left remote", seed, probeString(p))
					}
					continue
				}
				if sideString(side.want) != sideString(side.got) {
					t.Fatalf("seed %d: %s: want %s, got %s", seed, probeString(p), sideString(side.want), sideString(side.got))
				}
			}
		}
	}
}
