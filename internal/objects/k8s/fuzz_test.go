package k8s

import (
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzDecode feeds arbitrary documents to Decode: it must never panic, and
// every error must carry a position.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{podSelector: {}}], ports: [{port: 80, endPort: 90}]}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var doc yaml.Node
		if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
			return
		}
		root := doc.Content[0]
		apiVersion, kind := typeOf(root)
		if !Handles(apiVersion, kind) {
			return
		}
		set, errs := Decode("fuzz.yaml", root, apiVersion, kind)
		if len(errs) == 0 && set == nil {
			t.Fatal("no set and no errors")
		}
		for _, e := range errs {
			if e.Pos.File != "fuzz.yaml" || e.Pos.Line == 0 {
				t.Fatalf("error without a position: %v", e)
			}
		}
	})
}
