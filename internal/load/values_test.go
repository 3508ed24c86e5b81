package load

import (
	"strings"
	"testing"
)

// One rule for label keys and values, whichever kind carries them: a
// native Namespace once took `Bad!Key` that a v1 Namespace refused.
func TestLabelRulesAgreeAcrossKinds(t *testing.T) {
	for _, doc := range []string{
		"apiVersion: bulkhead.dev/v1\nkind: Namespace\nmetadata: {name: a, labels: {Bad!Key: x}}\n",
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {Bad!Key: x}}\n",
		"apiVersion: bulkhead.dev/v1\nkind: Namespace\nmetadata: {name: a, labels: {k: 'has space'}}\n",
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {k: 'has space'}}\n",
		"apiVersion: bulkhead.dev/v1\nkind: Workload\nmetadata: {name: w, namespace: a, labels: {'a:b': x}}\nspec: {ips: [10.0.0.1]}\n",
	} {
		_, errs := Bytes("in.yaml", []byte(doc))
		if len(errs) != 1 || !strings.Contains(errs[0].Msg, "invalid label") {
			t.Errorf("%q: want one invalid-label error, got %v", doc, errs)
		}
	}
}

// Kubernetes container ports need no name; an unnamed port is kept and
// never matches a named one.
func TestUnnamedWorkloadPortAccepted(t *testing.T) {
	doc := "apiVersion: bulkhead.dev/v1\nkind: Workload\nmetadata: {name: w, namespace: a}\nspec: {ips: [10.0.0.1], ports: [{port: 8080, protocol: TCP}]}\n"
	set, errs := Bytes("in.yaml", []byte(doc))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if w := set.Workloads[0]; len(w.Ports) != 1 || w.Ports[0].Port != 8080 {
		t.Fatalf("ports = %+v", w.Ports)
	}
	bad := "apiVersion: bulkhead.dev/v1\nkind: Workload\nmetadata: {name: w, namespace: a}\nspec: {ips: [10.0.0.1], ports: [{name: HTTP, port: 80}]}\n"
	if _, errs := Bytes("in.yaml", []byte(bad)); len(errs) != 1 || !strings.Contains(errs[0].Msg, "invalid port name") {
		t.Fatalf("upper-case port name: %v", errs)
	}
}
