package objects_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/objects"
)

// FuzzCanonical: whatever reads as objects decodes from its canonical
// form to the same canonical form and the same model.
func FuzzCanonical(f *testing.F) {
	files, _ := filepath.Glob("../../examples/*/*.yaml")
	for _, p := range files {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: s}\nspec: {selector: {matchLabels: {desk: 0x10}}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, errs := objects.Read("fuzz.yaml", data)
		if len(errs) > 0 {
			return
		}
		for _, o := range objs {
			s := mustStored(t, o)
			if string(s.Canon) != string(o.Canon) {
				t.Fatalf("canonical form changes on a round trip:\n%s\n%s", o.Canon, s.Canon)
			}
			if !sameModel(o.Set, s.Set) {
				t.Fatalf("the stored form decodes to another model:\n%s", o.Canon)
			}
		}
	})
}
