package benchcompile

import (
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// withHeldWall adds emergency denies between env-dev and pci both ways, so
// that the generated wall holds and its proof must look at every pair.
func withHeldWall(s *policy.Set) *policy.Set {
	held := *s
	seg := func(name string) []policy.Peer { return []policy.Peer{{Segment: name}} }
	held.Policies = append(append([]*policy.Policy(nil), s.Policies...),
		&policy.Policy{Name: "pci-wall", Kind: "Policy", Tier: policy.Emergency, Mode: policy.Enforce, Subject: policy.Subject{Segment: "pci"},
			Ingress: []policy.Rule{{ID: "pci-in", Action: policy.Deny, Peers: seg("env-dev")}},
			Egress:  []policy.Rule{{ID: "pci-out", Action: policy.Deny, Peers: seg("env-dev")}}},
		&policy.Policy{Name: "dev-wall", Kind: "Policy", Tier: policy.Emergency, Mode: policy.Enforce, Subject: policy.Subject{Segment: "env-dev"},
			Ingress: []policy.Rule{{ID: "dev-in", Action: policy.Deny, Peers: seg("pci")}},
			Egress:  []policy.Rule{{ID: "dev-out", Action: policy.Deny, Peers: seg("pci")}}})
	return &held
}

// BenchmarkProveWalls proves the generated wall at full scale: as
// generated (breached both ways) and held by emergency denies. cpu-s/op is
// the process's CPU time (garbage collection included), steadier than wall
// time on a shared VM.
func BenchmarkProveWalls(b *testing.B) {
	set := Generate(Full)
	for _, c := range []struct {
		name     string
		set      *policy.Set
		breaches int
	}{{"breached", set, 2}, {"held", withHeldWall(set), 0}} {
		b.Run(c.name, func(b *testing.B) {
			cpu0 := cpuTime()
			for b.Loop() {
				br, err := policy.ProveWalls(c.set)
				if err != nil || len(br) != c.breaches {
					b.Fatalf("ProveWalls: %v, %d breaches, want %d", err, len(br), c.breaches)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e9, "cpu-s/op")
		})
	}
}
