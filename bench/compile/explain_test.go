package benchcompile

import (
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// BenchmarkExplain times one verdict of the reference evaluator (what
// `bulkhead explain` computes) at full scale, on probes between random
// workloads of the generated set.
func BenchmarkExplain(b *testing.B) {
	set := Generate(Full)
	e, err := policy.NewEngine(set)
	if err != nil {
		b.Fatal(err)
	}
	n := len(set.Workloads)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		from := set.Workloads[(i*7919)%n]
		to := set.Workloads[(i*104729+13)%n]
		e.Evaluate(policy.Probe{
			From:     policy.Endpoint{Addr: from.IPs[0], Workload: from},
			To:       policy.Endpoint{Addr: to.IPs[0], Workload: to},
			Protocol: policy.TCP, Port: 8080,
		})
	}
}
