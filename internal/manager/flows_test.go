package manager_test

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/flows"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
)

func init() {
	// The schemas flows.go's routes added to api/openapi.yaml.
	for name, typ := range map[string]any{"FlowEndpoint": flows.Endpoint{}, "FlowRecord": flows.Record{}, "Flow": api.Flow{},
		"FlowBatch": flows.Batch{}, "FlowList": api.FlowList{}, "FlowCounts": api.FlowCounts{}} {
		schemaTypes[name] = typ
	}
}

func flowRecord(src, dst string, end time.Time, verdict flows.Verdict, rule string) flows.Record {
	return flows.Record{Start: end.Add(-time.Second), End: end, Proto: 6, Verdict: verdict, Rule: rule,
		Src:    flows.Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Port: 40000, Workload: src, Namespace: "app"},
		Dst:    flows.Endpoint{Addr: netip.MustParseAddr("10.0.0.2"), Port: 5432, Workload: dst, Namespace: "app"},
		Source: flows.FromConntrack}
}

func TestFlowsFromAgentsToQueries(t *testing.T) {
	e := start(t)
	agent, _ := e.join("node-1")
	now := time.Now().UTC().Truncate(time.Millisecond)
	sink := client.FlowSink{Client: agent}
	b := &flows.Batch{Stream: "s1", Seq: 1, Host: "node-1", Records: []flows.Record{
		flowRecord("web", "db", now.Add(-2*time.Second), flows.Allow, "Policy/app/db/ingress/web"),
		flowRecord("other", "db", now.Add(-time.Second), flows.Deny, "Policy/app/db/ingress/deny"),
	}, Lost: map[flows.Cause]uint64{flows.LostNFLOGGap: 2}}
	for range 2 { // a redelivery is counted once
		if err := sink.Send(ctx(t), b); err != nil {
			t.Fatal(err)
		}
	}
	// A host speaks only for itself, and a token is no agent.
	wantStatus(t, sink.Send(ctx(t), &flows.Batch{Stream: "s2", Seq: 1, Host: "node-2"}), http.StatusForbidden, "node-2")
	op := e.token("op", api.RoleOperator)
	wantStatus(t, client.FlowSink{Client: op}.Send(ctx(t), &flows.Batch{Stream: "s3", Seq: 1}), http.StatusForbidden, "")

	auditor := e.token("aud", api.RoleAuditor)
	got, err := auditor.Flows(ctx(t), url.Values{"workload": {"db"}, "since": {now.Add(-time.Hour).Format(time.RFC3339)}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Flows) != 2 || got.Flows[0].Src.Workload != "web" || got.Flows[1].Rule != "Policy/app/db/ingress/deny" || got.Flows[0].Host != "node-1" {
		t.Fatalf("flows of db: %+v", got.Flows)
	}
	got, _ = op.Flows(ctx(t), url.Values{"verdict": {"deny"}})
	if len(got.Flows) != 1 || got.Flows[0].Src.Workload != "other" {
		t.Fatalf("denied flows: %+v", got.Flows)
	}
	_, err = op.Flows(ctx(t), url.Values{"port": {"http"}})
	wantStatus(t, err, http.StatusBadRequest, "port")

	n, err := op.FlowCounts(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if n.Stored != 2 || n.Duplicates != 1 || n.Lost["node-1"][flows.LostNFLOGGap] != 2 || n.Rules["Policy/app/db/ingress/web"].Flows != 1 {
		t.Fatalf("counts %+v", n)
	}

	// Following: what is stored, then what arrives.
	fctx, cancel := context.WithTimeout(ctx(t), 20*time.Second)
	defer cancel()
	seen := make(chan api.Flow, 10)
	go func() {
		_ = op.FollowFlows(fctx, url.Values{"workload": {"cache"}}, func(f api.Flow) error { seen <- f; return nil })
	}()
	time.Sleep(300 * time.Millisecond)
	if err := sink.Send(ctx(t), &flows.Batch{Stream: "s1", Seq: 2, Records: []flows.Record{
		flowRecord("web", "db", now, flows.Allow, "x"), flowRecord("web", "cache", now, flows.Allow, "y")}}); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-seen:
		if f.Dst.Workload != "cache" {
			t.Fatalf("followed %+v, want web→cache only", f)
		}
	case <-fctx.Done():
		t.Fatal("no flow followed")
	}
}

// A host may not report a flow between two other hosts' workloads.
func TestFlowsOfOtherHostsRefused(t *testing.T) {
	e := start(t)
	n1, _ := e.join("node-1")
	n2, _ := e.join("node-2")
	if _, err := n1.ReportWorkloads(ctx(t), "node-1", tradingFloor(), nil, true); err != nil {
		t.Fatal(err)
	}
	r := flowRecord("buy-signal", "buy-db", time.Now(), flows.Allow, "r")
	r.Src.Addr, r.Dst.Addr = netip.MustParseAddr("10.10.1.10"), netip.MustParseAddr("10.10.2.10")
	var err error
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		// The inventory follows the store: wait until it holds node-1's report.
		if err = (client.FlowSink{Client: n2}).Send(ctx(t), &flows.Batch{Stream: "n2", Seq: 1, Records: []flows.Record{r}}); err != nil {
			break
		}
	}
	wantStatus(t, err, http.StatusForbidden, "between workloads of hosts node-1 and node-1")
	if err := (client.FlowSink{Client: n1}).Send(ctx(t), &flows.Batch{Stream: "n1", Seq: 1, Records: []flows.Record{r}}); err != nil {
		t.Fatalf("node-1's own flow: %v", err)
	}
}

// A batch is read with its fields exact: an unknown one is refused.
func TestFlowBatchUnknownFieldRefused(t *testing.T) {
	e := start(t)
	agent, _ := e.join("node-1")
	err := agent.Do(ctx(t), "POST", "/v1/flows", map[string]any{"stream": "s", "seq": 1, "records": []any{}, "colour": "red"}, nil)
	wantStatus(t, err, http.StatusBadRequest, "colour")
}
