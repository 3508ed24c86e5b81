package load

import (
	"strings"
	"testing"
)

func TestSyntaxErrorHasLine(t *testing.T) {
	_, errs := Bytes("x.yaml", []byte("apiVersion: bulkhead.dev/v1\nkind: Policy\n  metadata: [\n"))
	if errs == nil || errs[0].Pos.Line == 0 || !strings.HasPrefix(errs.Error(), "x.yaml:") {
		t.Fatalf("got %v", errs)
	}
}

func TestUnknownKindNamesValidKinds(t *testing.T) {
	_, errs := Bytes("x.yaml", []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"))
	if errs == nil || !strings.Contains(errs.Error(), "x.yaml:1:1: kind: unsupported object apps/v1 Deployment; valid:") {
		t.Fatalf("got %v", errs)
	}
}

func TestEveryDocumentsErrorsAreReported(t *testing.T) {
	_, errs := Bytes("x.yaml", []byte(`apiVersion: bulkhead.dev/v1
kind: Wall
metadata: {name: a}
spec: {segments: [x]}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: b}
spec: {}
`))
	if len(errs) != 2 {
		t.Fatalf("want 2 errors, got %v", errs)
	}
}

func TestPathsReadsDirectoriesAndRefusesEmptyOnes(t *testing.T) {
	set, err := Paths([]string{"../../examples/policies"})
	if err != nil || len(set.Policies) == 0 || len(set.Walls) != 1 {
		t.Fatalf("examples: %v, %+v", err, set)
	}
	if _, err := Paths([]string{t.TempDir()}); err == nil {
		t.Fatal("an empty directory was accepted")
	}
}

// FuzzLoad feeds arbitrary bytes through the whole loader (native and
// Kubernetes objects): it must never panic, and every error must say where.
func FuzzLoad(f *testing.F) {
	f.Add([]byte("apiVersion: bulkhead.dev/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  appliesTo: {selector: {}}\n  ingress: [{action: deny, from: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}], services: [{protocol: tcp, port: 80, endPort: 90}]}]\n"))
	f.Add([]byte(`{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy","metadata":{"name":"n","namespace":"x"},"spec":{"podSelector":{},"ingress":[{"from":[{"namespaceSelector":{}}],"ports":[{"port":"http"}]}]}}`))
	f.Add([]byte("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a, labels: {x: y}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, errs := Bytes("f.yaml", data)
		if set != nil && errs != nil {
			t.Fatal("both a set and errors")
		}
		for _, e := range errs {
			if e.Pos.File != "f.yaml" {
				t.Fatalf("error without a file: %v", e)
			}
		}
	})
}

// A file named twice — by itself and inside a directory also named — is
// one file: read once, so that its objects do not clash with themselves.
func TestPathsReadsAFileNamedTwiceOnce(t *testing.T) {
	once, err := Paths([]string{"../../examples/policies"})
	if err != nil {
		t.Fatal(err)
	}
	files, err := Expand("../../examples/policies")
	if err != nil {
		t.Fatal(err)
	}
	twice, err := Paths([]string{"../../examples/policies", files[0], "../../examples/../examples/policies"})
	if err != nil {
		t.Fatalf("a file named twice: %v", err)
	}
	if len(twice.Policies) != len(once.Policies) || len(twice.Walls) != len(once.Walls) {
		t.Fatalf("read twice: %d policies, %d walls; once: %d, %d", len(twice.Policies), len(twice.Walls), len(once.Policies), len(once.Walls))
	}
}
