package decide_test

import (
	"os"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/decide"
)

// The example rules of docs/policy.md compile and decide as it says.
func TestExampleRules(t *testing.T) {
	data, err := os.ReadFile("../../examples/decisions/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := compile(t, string(data), decide.Options{})
	report := decide.Endpoint{Workload: true, Namespace: "trading", Name: "report-0", Image: "sha256:1",
		Labels: map[string]string{"app": "report", "signed": "true"}, Address: "10.1.0.4"}
	ask := decide.Escalation{Rules: []decide.RuleRef{{Namespace: "trading", Policy: "reporting", Rule: "ask-db"}}}
	monday9 := time.Date(2026, 11, 30, 9, 0, 0, 0, zurich)
	tests := []struct {
		name string
		req  decide.Request
		rule string
		out  decide.Outcome
	}{
		{"office hours", req(monday9, report, db, ask), "reporting-office-hours", decide.Allow},
		{"after hours", req(monday9.Add(11*time.Hour), report, db, ask), "reporting-after-hours", decide.Hold},
		{"first dataset", req(monday9, report, db, decide.Escalation{ConflictClass: "payment-datasets", Dataset: "cards"}), "first-dataset", decide.Allow},
		{"internet, https", func() decide.Request {
			r := req(monday9, report, outside, decide.Escalation{Rules: []decide.RuleRef{{Namespace: "trading", Policy: "egress", Rule: "web"}}})
			r.Port = 443
			return r
		}(), "internet-egress", decide.Hold},
	}
	for _, tc := range tests {
		if d := e.Decide(tc.req); d.Rule != tc.rule || d.Outcome != tc.out {
			t.Errorf("%s: %+v, want %s by %s", tc.name, d, tc.out, tc.rule)
		}
	}
	// The flood rule comes first: the 51st escalation in a minute quarantines.
	var d decide.Decision
	for i := range 51 {
		d = e.Decide(req(monday9.Add(time.Hour+time.Duration(i)*time.Second), report, db, ask))
	}
	if d.Rule != "quarantine-floods" || d.Outcome != decide.Quarantine {
		t.Errorf("after 51 escalations in a minute: %+v", d)
	}
}
