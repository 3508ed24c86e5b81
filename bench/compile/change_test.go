package benchcompile

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// policyEdit is one kind of single-policy change: do changes the set in
// place (a new Policies slice, new objects for what changes), undo puts
// the original back. Alternating the two keeps the set near its origin.
type policyEdit struct {
	name     string
	do, undo func(s *policy.Set, i int)
}

// appPolicies lists the indexes of the generated per-app policies (those
// with a workload selector on "app"), the common edit target.
func appPolicies(s *policy.Set) []int {
	var out []int
	for i, p := range s.Policies {
		if p.Tier == policy.Application && p.Subject.Workloads != nil && p.Subject.Workloads.MatchLabels["app"] != "" {
			out = append(out, i)
		}
	}
	return out
}

func clonePolicy(p *policy.Policy) *policy.Policy {
	c := *p
	c.Ingress = append([]policy.Rule(nil), p.Ingress...)
	c.Egress = append([]policy.Rule(nil), p.Egress...)
	return &c
}

// replacePolicy puts p at index i of a copy of the policy list, as an
// agent does when one object of many changes.
func replacePolicy(s *policy.Set, i int, p *policy.Policy) {
	pols := append([]*policy.Policy(nil), s.Policies...)
	pols[i] = p
	s.Policies = pols
}

func policyEdits(s *policy.Set) []policyEdit {
	apps := appPolicies(s)
	orig := append([]*policy.Policy(nil), s.Policies...)
	target := func(i int) int { return apps[(i*7919)%len(apps)] }
	restore := func(s *policy.Set, i int) { replacePolicy(s, target(i), orig[target(i)]) }
	infra := slices.IndexFunc(orig, func(p *policy.Policy) bool { return p.Name == "infra" })
	nsApps := map[string][]string{}
	for _, w := range s.Workloads {
		if apps := nsApps[w.Namespace]; len(apps) == 0 || apps[len(apps)-1] != w.Labels["app"] {
			nsApps[w.Namespace] = append(apps, w.Labels["app"])
		}
	}
	return []policyEdit{
		{"none", func(*policy.Set, int) {}, func(*policy.Set, int) {}},
		{"port", func(s *policy.Set, i int) {
			p := clonePolicy(orig[target(i)])
			r := &p.Ingress[0]
			r.Services = []policy.Service{{Protocol: policy.TCP, Port: 9100 + i%50}}
			replacePolicy(s, target(i), p)
		}, restore},
		{"add-rule", func(s *policy.Set, i int) {
			p := clonePolicy(orig[target(i)])
			peer := s.Workloads[(i*104729)%len(s.Workloads)].Labels["app"]
			p.Ingress = append(p.Ingress, policy.Rule{ID: "extra", Action: policy.Allow,
				Peers: []policy.Peer{{Workloads: sel("app", peer)}}, Services: tcp(9200)})
			replacePolicy(s, target(i), p)
		}, restore},
		{"remove-rule", func(s *policy.Set, i int) {
			p := clonePolicy(orig[target(i)])
			p.Ingress = nil
			replacePolicy(s, target(i), p)
		}, restore},
		{"subject", func(s *policy.Set, i int) {
			p := clonePolicy(orig[target(i)])
			apps := nsApps[p.Namespace]
			p.Subject.Workloads = sel("app", apps[(i*104729+13)%len(apps)])
			replacePolicy(s, target(i), p)
		}, restore},
		{"platform-port", func(s *policy.Set, i int) {
			// The infrastructure policy applies to every workload: every
			// group holds it, so every group is computed again.
			p := clonePolicy(orig[infra])
			p.Egress[0].Services = []policy.Service{{Protocol: policy.UDP, Port: 54}, {Protocol: policy.TCP, Port: 54}}
			replacePolicy(s, infra, p)
		}, func(s *policy.Set, i int) { replacePolicy(s, infra, orig[infra]) }},
		{"add-policy", func(s *policy.Set, i int) {
			a := s.Workloads[(i*7919)%len(s.Workloads)]
			b := s.Workloads[(i*104729+13)%len(s.Workloads)]
			p := &policy.Policy{Name: fmt.Sprintf("added-%d", i), Namespace: a.Namespace, Kind: "Policy", Tier: policy.Application,
				Priority: 100, Mode: policy.Enforce, Subject: policy.Subject{Workloads: sel("app", a.Labels["app"])}, Isolate: [2]bool{true, false},
				Ingress: []policy.Rule{{ID: "from-b", Action: policy.Allow, Services: tcp(8443),
					Peers: []policy.Peer{{Workloads: sel("app", b.Labels["app"])}}}}}
			s.Policies = append(s.Policies[:len(s.Policies):len(s.Policies)], p)
		}, func(s *policy.Set, i int) {
			s.Policies = s.Policies[: len(s.Policies)-1 : len(s.Policies)-1]
		}},
	}
}

var fullOnce struct {
	sync.Once
	set *policy.Set
	c   *compile.Compiler
	st  *compile.State
	err error
}

// fullCompiler compiles the Full set once per process; the benchmarks
// that change it leave it as they found it.
func fullCompiler() (*policy.Set, *compile.Compiler, *compile.State, error) {
	fullOnce.Do(func() {
		fullOnce.set = Generate(Full)
		fullOnce.c, fullOnce.err = compile.New(fullOnce.set, "", nil)
		if fullOnce.err == nil {
			fullOnce.st = fullOnce.c.State()
		}
	})
	return fullOnce.set, fullOnce.c, fullOnce.st, fullOnce.err
}

// BenchmarkChangeOnePolicy times one changed policy at full scale, from
// the new set to the delta the dataplane writes: SetPolicies, State and
// Diff from the previous State. Each iteration is one change: an edit or
// its undo.
func BenchmarkChangeOnePolicy(b *testing.B) {
	set, c, st, err := fullCompiler()
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range policyEdits(set) {
		b.Run(e.name, func(b *testing.B) {
			elems := 0
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				if i%2 == 0 {
					e.do(set, i/2)
				} else {
					e.undo(set, i/2)
				}
				if err := c.SetPolicies(set); err != nil {
					b.Fatal(err)
				}
				next := c.State()
				d := compile.Diff(st, next)
				elems += d.Len()
				st = next
			}
			if b.N%2 == 1 {
				e.undo(set, b.N/2)
				if err := c.SetPolicies(set); err != nil {
					b.Fatal(err)
				}
				st = c.State()
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
			b.ReportMetric(float64(elems)/float64(b.N), "changes/op")
		})
	}
	fullOnce.st = st
}

// BenchmarkDiffFirstLoad times Diff(nil, s) at full scale: what every first
// load of the dataplane lists.
func BenchmarkDiffFirstLoad(b *testing.B) {
	_, _, st, err := fullCompiler()
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		_ = compile.Diff(nil, st)
	}
}

// changeTimes runs each edit n times (edit and undo) and reports median and
// max of SetPolicies + State + Diff, for TestFigures.
func changeTimes(t *testing.T, c *compile.Compiler, st *compile.State, set *policy.Set, n int) *compile.State {
	for _, e := range policyEdits(set) {
		var ts, diffs []time.Duration
		var sizes []int
		for i := 0; i < 2*n; i++ {
			if i%2 == 0 {
				e.do(set, i/2)
			} else {
				e.undo(set, i/2)
			}
			start := time.Now()
			if err := c.SetPolicies(set); err != nil {
				t.Fatal(err)
			}
			next := c.State()
			t0 := time.Now()
			d := compile.Diff(st, next)
			ts, diffs = append(ts, time.Since(start)), append(diffs, time.Since(t0))
			sizes = append(sizes, d.Len()-len(d.Rules))
			st = next
		}
		slices.Sort(ts)
		slices.Sort(diffs)
		slices.Sort(sizes)
		t.Logf("one policy, %-11s (SetPolicies + State + Diff): median %v (Diff %v), max %v; changed elements besides the rule table median %d, max %d",
			e.name, ts[len(ts)/2].Round(time.Microsecond), diffs[len(ts)/2].Round(time.Microsecond), ts[len(ts)-1].Round(time.Microsecond),
			sizes[len(sizes)/2], sizes[len(sizes)-1])
	}
	return st
}
