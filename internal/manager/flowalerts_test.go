package manager_test

import (
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/flows"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
)

// A workload denied to 20 distinct ports within a minute raises one scan
// alert, listed by GET /v1/alerts.
func TestFlowScanRaisesAlert(t *testing.T) {
	e := start(t)
	agent, _ := e.join("node-1")
	now := time.Now().UTC().Truncate(time.Minute)
	var recs []flows.Record
	for p := range 25 {
		r := flowRecord("web", "db", now.Add(time.Duration(p)*time.Second), flows.Deny, "Policy/app/db/ingress/deny")
		r.Dst.Port = uint16(1000 + p)
		recs = append(recs, r)
	}
	if err := (client.FlowSink{Client: agent}).Send(ctx(t), &flows.Batch{Stream: "s1", Seq: 1, Host: "node-1", Records: recs}); err != nil {
		t.Fatal(err)
	}
	var got api.AlertList
	if err := e.token("aud", api.RoleAuditor).Do(ctx(t), "GET", "/v1/alerts", nil, &got); err != nil {
		t.Fatal(err)
	}
	var scans []api.Alert
	for _, a := range got.Items {
		if a.Kind == "scan" {
			scans = append(scans, a)
		}
	}
	if len(scans) != 1 || !strings.Contains(scans[0].Message, "app/web: 20 distinct denied destinations") {
		t.Fatalf("alerts: %+v; want one scan by app/web", got.Items)
	}
}
