package decide_test

import (
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/decide"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// BenchmarkCheck is what reading one stored decision rule adds for its
// condition.
func BenchmarkCheck(b *testing.B) {
	r := &policy.DecisionRule{Name: "x", Order: 1, Outcome: decide.Allow,
		Condition: `source.labels.?team.orValue("") == "payments" && now.hour >= 8 && now.hour < 18 && rate(duration("1m")) < 10`}
	b.ReportAllocs()
	for b.Loop() {
		if errs := decide.Check(r); len(errs) > 0 {
			b.Fatal(errs)
		}
	}
}
