package benchdataplane

import (
	"testing"

	benchcompile "github.com/bulkhead-dev/bulkhead/bench/compile"
	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/load"
)

// TestDocumentsRoundTrip checks that the documents sent to the agent say
// what the generated set says: both compile to tables of the same size,
// and the test pair's verdicts agree.
func TestDocumentsRoundTrip(t *testing.T) {
	s := Generate(benchcompile.Shape{Workloads: 2000, Namespaces: 20, Hosts: 20, Rules: 300, Seed: 3})
	back, errs := load.Bytes("bench.yaml", []byte(documents(s)))
	if len(errs) > 0 {
		t.Fatalf("load: %v", errs)
	}
	a, err := compile.Compile(s, BenchHost, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := compile.Compile(back, BenchHost, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sa, sb := a.Stats(), b.Stats(); sa != sb {
		t.Errorf("tables differ:\n generated %+v\n documents %+v", sa, sb)
	}
	if CountRules(s) != CountRules(back) || len(s.Workloads) != len(back.Workloads) {
		t.Errorf("documents carry %d rules and %d workloads, want %d and %d", CountRules(back), len(back.Workloads), CountRules(s), len(s.Workloads))
	}
}
