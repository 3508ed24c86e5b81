package policy_test

import (
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/load"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"go.yaml.in/yaml/v3"
)

func mustDoc(t testing.TB, s string) *yaml.Node {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(s), &n); err != nil {
		t.Fatal(err)
	}
	return n.Content[0]
}

func TestErrorsNamePlaceFieldAndValidValues(t *testing.T) {
	_, errs := load.Bytes("bad.yaml", []byte(`apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: Bad_Name}
spec:
  tier: middle
  appliesTo: {selector: {matchExpressions: [{key: app, operator: Maybe}]}}
  ingress:
    - action: allow
      from: [{cidr: 10.0.0.0/33}]
      services: [{protocol: tcp, port: 70000}, {protocol: tcp, port: 80, endPort: 79}]
      colour: red
---
apiVersion: bulkhead.dev/v1
kind: Wall
metadata: {name: w}
spec: {segments: [only-one]}
`))
	if errs == nil {
		t.Fatal("no error")
	}
	got := errs.Err().Error()
	for _, want := range []string{
		"bad.yaml:11:7: spec.ingress[0].colour: unknown field \"colour\"; valid fields here: action, from, log, name, services, to",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	// Unknown fields stop the document before its values are checked; the
	// same document without it reports every value error at once.
	_, errs = load.Bytes("bad.yaml", []byte(`apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: Bad_Name}
spec:
  tier: middle
  appliesTo: {selector: {matchExpressions: [{key: app, operator: Maybe}]}}
  ingress:
    - action: allow
      from: [{cidr: 10.0.0.0/33}]
      services: [{protocol: tcp, port: 70000}, {protocol: tcp, port: 80, endPort: 79}]
---
apiVersion: bulkhead.dev/v1
kind: Wall
metadata: {name: w}
spec: {segments: [only-one]}
`))
	got = errs.Err().Error()
	for _, want := range []string{
		"metadata.name: invalid name \"Bad_Name\"",
		"spec.tier: unknown tier \"middle\"; valid, in evaluation order: emergency, infrastructure, environment, application, baseline",
		"bad.yaml:6:45: spec.appliesTo.selector.matchExpressions[0].operator: unknown operator \"Maybe\"",
		"bad.yaml:9:14: spec.ingress[0].from[0].cidr: invalid CIDR \"10.0.0.0/33\"",
		"spec.ingress[0].services[0].port: port 70000 is out of range 1-65535",
		"spec.ingress[0].services[1].endPort: endPort 79 must be between port 80 and 65535",
		"spec.segments: a wall needs at least two different segments",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}

func TestUnknownSegmentIsAnError(t *testing.T) {
	set, errs := load.Bytes("p.yaml", []byte(`apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: p}
spec:
  appliesTo: {segment: nowhere}
`))
	if errs != nil {
		t.Fatal(errs.Err())
	}
	_, err := policy.NewEngine(set)
	if err == nil || !strings.Contains(err.Error(), `segment "nowhere" does not exist`) {
		t.Fatalf("got %v", err)
	}
}

func TestJSONAndListAreRead(t *testing.T) {
	set, errs := load.Bytes("p.json", []byte(`{"apiVersion": "v1", "kind": "List", "items": [
	  {"apiVersion": "bulkhead.dev/v1", "kind": "Segment", "metadata": {"name": "s"}, "spec": {"cidrs": [{"cidr": "10.0.0.0/8"}]}},
	  {"apiVersion": "bulkhead.dev/v1", "kind": "Workload", "metadata": {"name": "w", "namespace": "n", "labels": {"a": "b"}}, "spec": {"ips": ["10.1.1.1"]}}
	]}`))
	if errs != nil {
		t.Fatal(errs.Err())
	}
	if len(set.Segments) != 1 || len(set.Workloads) != 1 || set.Workloads[0].IPs[0].String() != "10.1.1.1" {
		t.Fatalf("got %+v", set)
	}
}

func TestWallProofGivesCounterexample(t *testing.T) {
	e := engine(t, `
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: web}
spec: {namespaces: [a], selector: {matchLabels: {app: web}}}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: api}
spec: {namespaces: [b], selector: {matchLabels: {app: api}}}
---
apiVersion: bulkhead.dev/v1
kind: Wall
metadata: {name: web-api}
spec: {segments: [web, api]}
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: zero-trust}
spec:
  tier: baseline
  appliesTo: {selector: {}}
  ingress: [{action: deny}]
  egress: [{action: deny}]
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: leak, namespace: b}
spec:
  appliesTo: {selector: {matchLabels: {app: api}}}
  ingress:
    - {name: oops, action: allow, from: [{namespaces: [a], selector: {}}], services: [{protocol: tcp, port: 8443}]}
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: web-out, namespace: a}
spec:
  appliesTo: {selector: {matchLabels: {app: web}}}
  egress:
    - {name: out, action: allow, to: [{any: true}]}
`)
	breaches, err := policy.ProveWalls(e.Set())
	if err != nil {
		t.Fatal(err)
	}
	if len(breaches) != 1 {
		t.Fatalf("got %d breaches, want 1 (web -> api only): %v", len(breaches), breaches)
	}
	b := breaches[0]
	if b.From != "web" || b.To != "api" || b.Probe.Port != 8443 || b.Verdict.Ingress.Rule == nil || !strings.Contains(b.Verdict.Ingress.Rule.ID, "oops") {
		t.Fatalf("counterexample %v", b)
	}
	// Closing the leak makes the wall hold.
	set := e.Set()
	for _, p := range set.Policies {
		if p.Name == "leak" {
			p.Ingress = nil
		}
	}
	if breaches, _ := policy.ProveWalls(set); len(breaches) != 0 {
		t.Fatalf("still breached: %v", breaches)
	}
}

func TestNamespaceMayRepeatWithTheSameLabels(t *testing.T) {
	doc := func(labels string) *policy.Set {
		set, errs := load.Bytes("ns.yaml", []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: "+labels+"}\n"))
		if errs != nil {
			t.Fatal(errs.Err())
		}
		inv, errs := objects.DecodeInventory("inv.yaml", mustDoc(t, inventory))
		if errs != nil {
			t.Fatal(errs.Err())
		}
		set.Merge(inv)
		return set
	}
	if _, err := policy.NewEngine(doc("{team: alpha}")); err != nil {
		t.Fatalf("same labels: %v", err)
	}
	if _, err := policy.NewEngine(doc("{team: gamma}")); err == nil || !strings.Contains(err.Error(), "defined twice with different labels") {
		t.Fatalf("different labels: %v", err)
	}
}
