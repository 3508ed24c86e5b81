package objects_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/objects"
)

// parallelCases are streams whose documents the parallel reader cuts
// apart, each next to what could make a part read differently from the
// stream: anchors, directives, markers inside scalars, errors in a later
// document, an object given twice in two parts, Lists.
func parallelCases(t testing.TB) map[string]string {
	seg := func(name, extra string) string {
		return "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: " + name + "}\nspec: {selector: {matchLabels: {desk: " + extra + "}}}\n"
	}
	cases := map[string]string{
		"plain":        seg("a", "x") + "---\n" + seg("b", "0x10") + "--- \n" + seg("c", "017") + "---\t# c\n" + seg("d", "1e3"),
		"leading":      "---\n" + seg("a", "x") + "---\n---\n" + seg("b", "y") + "...\n---\n" + seg("c", "z"),
		"twice":        seg("a", "x") + "---\n" + seg("b", "y") + "---\n" + seg("a", "z"),
		"syntax later": seg("a", "x") + "---\n" + seg("b", "y") + "---\n" + "kind: [\n" + "---\n" + seg("c", "z"),
		"invalid two":  seg("a", "0x") + "---\n" + seg("b B", "y") + "---\n" + seg("c", "[1]") + "---\n" + seg("d!", "z"),
		"alias across": "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: &n a}\nspec: {selector: {}}\n---\n" +
			"apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: *n}\nspec: {selector: {}}\n---\n" + seg("c", "z"),
		"anchor again": seg("a", "&x v") + "---\n" + seg("b", "&x w") + "---\n" + seg("c", "z"),
		"directive":    seg("a", "x") + "...\n%YAML 1.1\n---\n" + seg("b", "y") + "---\n" + seg("c", "z"),
		"tag":          seg("a", "x") + "...\n%TAG !e! tag:example.com,2000:\n---\n" + seg("b", "!e!foo y") + "---\n" + seg("c", "z"),
		"block scalar": "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: a}\nspec: |\n  x\n---\n  y\n---\n" + seg("c", "z"),
		"quoted":       "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: \"a\n---\nb\"}\nspec: {}\n---\n" + seg("c", "z"),
		"flow":         "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: a,\n---\n}\n---\n" + seg("c", "z"),
		"crlf":         strings.ReplaceAll(seg("a", "x")+"---\n"+seg("b", "y")+"---\n"+seg("c", "z"), "\n", "\r\n"),
		"lone cr":      seg("a", "x") + "\r---\n" + seg("b", "y") + "---\n" + seg("c", "z"),
		"nel":          seg("a", "x") + "# \u0085\n---\n" + seg("b", "y") + "---\n" + seg("c", "z"),
		"not a marker": "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata:\n  name: a\n---x: 1\n---\n" + seg("b", "y"),
		"list":         "kind: List\nitems:\n- " + strings.ReplaceAll(seg("a", "x"), "\n", "\n  ") + "\n---\n" + seg("b", "y") + "---\nkind: List\nitems: {}\n---\n" + seg("c", "z"),
		"list in list": seg("a", "x") + "---\nkind: List\nitems:\n- {kind: List, items: []}\n---\n" + seg("c", "z"),
	}
	var all strings.Builder
	files, _ := filepath.Glob("../../examples/policies/*.yaml")
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		all.WriteString("---\n")
		all.Write(data)
	}
	cases["examples"] = all.String()
	return cases
}

// The parallel reader gives exactly what the sequential one gives: the
// same objects (positions included) or the same errors in the same order.
func TestParallelReadIsSequentialRead(t *testing.T) {
	for name, doc := range parallelCases(t) {
		for _, workers := range []int{2, 3, 64} {
			want, wantErrs := objects.ReadSequential("in.yaml", []byte(doc))
			got, gotErrs, cut := objects.ReadParallel("in.yaml", []byte(doc), workers)
			if !cut {
				got, gotErrs = objects.ReadSequential("in.yaml", []byte(doc))
			}
			if !reflect.DeepEqual(gotErrs, wantErrs) {
				t.Errorf("%s, %d workers (cut %v): errors\n%v\nwant\n%v", name, workers, cut, gotErrs, wantErrs)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s, %d workers (cut %v): objects differ", name, workers, cut)
			}
			if name == "examples" && (!cut || len(want) < 10) {
				t.Errorf("examples, %d workers: cut %v, %d objects", workers, cut, len(want))
			}
		}
	}
}

// FuzzParallelRead: whatever the stream, cutting it changes nothing.
func FuzzParallelRead(f *testing.F) {
	for _, doc := range parallelCases(f) {
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		want, wantErrs := objects.ReadSequential("in.yaml", data)
		got, gotErrs, cut := objects.ReadParallel("in.yaml", data, 3)
		if !cut {
			return
		}
		if !reflect.DeepEqual(gotErrs, wantErrs) || !reflect.DeepEqual(got, want) {
			t.Fatalf("parallel read differs:\n%q\n%v\nwant\n%v", data, gotErrs, wantErrs)
		}
	})
}

// Read itself takes the parallel path for a large stream, and gives what
// the sequential reader gives.
func TestReadLargeStream(t *testing.T) {
	var b strings.Builder
	for i := 0; b.Len() < 600<<10; i++ {
		fmt.Fprintf(&b, "---\napiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: s%d}\nspec: {selector: {matchLabels: {desk: \"%d\"}}}\n", i, i)
	}
	data := []byte(b.String())
	if _, _, cut := objects.ReadParallel("big.yaml", data, 2); !cut {
		t.Fatal("the stream is not cut")
	}
	got, gotErrs := objects.Read("big.yaml", data)
	want, wantErrs := objects.ReadSequential("big.yaml", data)
	if len(gotErrs) > 0 || len(wantErrs) > 0 || len(want) < 1000 || !reflect.DeepEqual(got, want) {
		t.Fatalf("parallel read differs: %d objects, %v; want %d objects, %v", len(got), gotErrs, len(want), wantErrs)
	}
}
