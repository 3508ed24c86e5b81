package manager_test

import (
	"net/http"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
)

// A host cannot register the reserved quarantine label: the report is
// refused whole, nothing is stored, and the refusal is audited.
func TestHostCannotRegisterReservedLabel(t *testing.T) {
	e := start(t)
	a1, _ := e.join("node-1")
	before := workloadCount(t, e.admin)
	_, err := a1.ReportWorkloads(ctx(t), "node-1", []api.HostWorkload{
		{Namespace: "shop", Name: "web", Labels: map[string]string{objects.QuarantinedLabel: "true"}, IPs: []string{"10.1.0.2"}},
	}, nil, true)
	if status(err) != http.StatusUnprocessableEntity {
		t.Fatalf("report with %s: %v, want 422", objects.QuarantinedLabel, err)
	}
	wantStatus(t, err, http.StatusUnprocessableEntity, "reserved")
	if got := workloadCount(t, e.admin); got != before {
		t.Errorf("%d workloads after the refused report, want %d", got, before)
	}
	if refusals(t, e.admin, "node-1") == 0 {
		t.Error("the refused report was not audited")
	}
}
