package manager_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
)

// The reproducer of a proven wall voided by scalar coercion: segments
// written `desk: 0x10` and `desk: 0x11` were proven apart on the
// request's YAML and stored as the number 16 and 17 by a generic decode,
// which every later proof and every agent read. A later policy allowing
// one desk to the other must be refused as a breach, on every apply.
func TestWallHoldsOnTheStoredForm(t *testing.T) {
	e := start(t)
	agent, _ := e.join("node-1")
	ws := []api.HostWorkload{
		{Namespace: "desks", Name: "a", Labels: map[string]string{"desk": "0x10"}, IPs: []string{"10.10.1.10"}},
		{Namespace: "desks", Name: "b", Labels: map[string]string{"desk": "0x11"}, IPs: []string{"10.10.1.11"}},
	}
	if _, err := agent.ReportWorkloads(ctx(t), "node-1", ws, nil, true); err != nil {
		t.Fatal(err)
	}
	wall := `apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: default-deny}
spec: {tier: baseline, appliesTo: {selector: {}}, ingress: [{action: deny}], egress: [{action: deny}]}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: desk-a}
spec: {selector: {matchLabels: {desk: 0x10}}}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: desk-b}
spec: {selector: {matchLabels: {desk: 0x11}}}
---
apiVersion: bulkhead.dev/v1
kind: Wall
metadata: {name: desks}
spec: {segments: [desk-a, desk-b]}
`
	if _, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("wall.yaml", wall)}); err != nil {
		t.Fatal(err)
	}
	// What the manager stores and serves is what it validated.
	segs, err := e.admin.Objects(ctx(t), "segments")
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range segs.Items {
		sel := it["spec"].(map[string]any)["selector"].(map[string]any)["matchLabels"].(map[string]any)
		if d, ok := sel["desk"].(string); !ok || !strings.HasPrefix(d, "0x1") {
			t.Fatalf("stored segment %v reads desk as %#v", it["metadata"], sel["desk"])
		}
	}
	cross := `apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: cross, namespace: desks}
spec:
  tier: application
  appliesTo: {segment: desk-b}
  ingress: [{action: allow, from: [{segment: desk-a}]}]
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: cross-out, namespace: desks}
spec:
  tier: application
  appliesTo: {segment: desk-a}
  egress: [{action: allow, to: [{segment: desk-b}]}]
`
	_, err = e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("cross.yaml", cross)})
	wantStatus(t, err, http.StatusUnprocessableEntity, `wall "desks" breached`)
}

// What `get` prints applies back: a backup made with `get -o json` or
// `-o yaml` restores against a manager as against an agent.
func TestGetAppliesBack(t *testing.T) {
	e := start(t)
	if _, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: docs(t, examplePolicies...)}); err != nil {
		t.Fatal(err)
	}
	all, err := e.admin.Objects(ctx(t), "")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, it := range all.Items {
		b.WriteString(toJSON(t, it))
		b.WriteString("\n---\n")
	}
	objs, errs := objects.Read("backup.yaml", []byte(b.String()))
	if len(errs) > 0 || len(objs) != len(all.Items) {
		t.Fatalf("backup does not read: %v", errs)
	}
	res, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("backup.yaml", b.String())})
	if err != nil || len(res.Unchanged) != len(all.Items) {
		t.Fatalf("apply of the backup: %+v %v", res, err)
	}
}

func toJSON(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
