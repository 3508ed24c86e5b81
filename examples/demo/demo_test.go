package demo

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/load"
)

// The demo's files are the examples' trading floor, byte for byte, and
// they load.
func TestSameAsExamples(t *testing.T) {
	fs := Files()
	if len(fs) == 0 {
		t.Fatal("no demo files")
	}
	for _, f := range fs {
		want, err := os.ReadFile(filepath.Join("..", "policies", f.Name))
		if err != nil {
			t.Errorf("%s: %v (a demo file with no counterpart in examples/policies)", f.Name, err)
			continue
		}
		if !bytes.Equal(f.Data, want) {
			t.Errorf("%s differs from examples/policies/%s: copy it again", f.Name, f.Name)
		}
		if _, errs := load.Bytes(f.Name, f.Data); len(errs) > 0 {
			t.Errorf("%s: %v", f.Name, errs.Err())
		}
	}
	examples, _ := filepath.Glob(filepath.Join("..", "policies", "*.yaml"))
	if len(examples) != len(fs) {
		t.Errorf("examples/policies has %d files, the demo %d: copy them again", len(examples), len(fs))
	}
	if _, err := Read(Baseline); err != nil {
		t.Error(err)
	}
}
