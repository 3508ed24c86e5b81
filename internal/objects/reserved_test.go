package objects_test

import (
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
)

// A host may never register a workload with a reserved label: quarantine
// is the manager's to give, not something a registration can claim (or
// pretend to lack).
func TestHostWorkloadMayNotCarryReservedLabel(t *testing.T) {
	ws := []api.HostWorkload{
		{Namespace: "shop", Name: "ok", Labels: map[string]string{"app": "web"}, IPs: []string{"10.0.0.1"}},
		{Namespace: "shop", Name: "bad", Labels: map[string]string{objects.QuarantinedLabel: "false"}, IPs: []string{"10.0.0.2"}},
	}
	good, bad := objects.CheckHostWorkloads("report of host node-1", ws)
	if len(good) != 0 || len(bad) != 1 || len(bad[1]) != 1 {
		t.Fatalf("good %d, bad %v; want the report refused for workloads[1] alone", len(good), bad)
	}
	e := bad[1][0]
	if e.Path != "workloads[1].labels" || !strings.Contains(e.Msg, "reserved") || !strings.Contains(e.Msg, objects.QuarantinedLabel) {
		t.Errorf("error %s: %s; want workloads[1].labels naming the reserved label", e.Path, e.Msg)
	}
}
