package objects_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
)

// A wall between segments written `desk: 0x10` and `desk: 0x11` once
// held on the request's YAML and fell on the JSON a generic decode made
// of it (both read as numbers), so a policy crossed it in the kernel.
// What is validated must be what is stored: the canonical form keeps
// every scalar as the type it was validated as.
func TestCanonicalFormKeepsWhatWasValidated(t *testing.T) {
	for _, v := range []string{"0x10", "017", "0o17", "1_000", "1.10", "1e3", "2001-01-01", "true", "null", "0x1538"} {
		doc := "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: s}\nspec: {selector: {matchLabels: {desk: " + v + "}}}\n"
		objs, errs := objects.Read("in.yaml", []byte(doc))
		if len(errs) > 0 {
			t.Fatalf("%s: %v", v, errs)
		}
		got := objs[0].Set.Segments[0].Workloads.MatchLabels["desk"]
		stored := mustStored(t, objs[0])
		if again := stored.Set.Segments[0].Workloads.MatchLabels["desk"]; again != got {
			t.Errorf("label written %s: validated as %q, stored as %q (canon %s)", v, got, again, objs[0].Canon)
		}
	}
}

// A port written 0x1538 is validated as a named port; it must not be
// stored as 5432.
func TestCanonicalPortStaysAName(t *testing.T) {
	doc := `apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: p, namespace: a}
spec:
  appliesTo: {selector: {}}
  ingress: [{action: allow, from: [{any: true}], services: [{protocol: tcp, port: 0x1538}, {protocol: tcp, port: 017}]}]
`
	objs, errs := objects.Read("in.yaml", []byte(doc))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	stored := mustStored(t, objs[0])
	for i, o := range []*objects.Object{objs[0], stored} {
		svcs := o.Set.Policies[0].Ingress[0].Services
		if svcs[0].Name != "0x1538" || svcs[0].Port != 0 || svcs[1].Port != 17 {
			t.Errorf("form %d: services = %+v", i, svcs)
		}
	}
}

// Every object of the examples and of the Kubernetes corpus decodes from
// its canonical form to the same model, and to the same canonical form.
func TestCanonicalRoundTrip(t *testing.T) {
	var files []string
	for _, glob := range []string{"../../examples/*.yaml", "../../examples/*/*.yaml", "../../examples/*/*.json", "k8s/testdata/fuzz/FuzzDecode/*", "../load/testdata/fuzz/*/*"} {
		m, _ := filepath.Glob(glob)
		files = append(files, m...)
	}
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(f, "testdata/fuzz") {
			data = fuzzInput(data)
		}
		objs, errs := objects.Read(f, data)
		if len(errs) > 0 {
			continue // the corpora hold bad input too
		}
		for _, o := range objs {
			s := mustStored(t, o)
			if string(s.Canon) != string(o.Canon) || s.Hash != o.Hash {
				t.Errorf("%s %s: canonical form changes on a round trip:\n%s\n%s", f, objects.String(o.Ref), o.Canon, s.Canon)
			}
			if !sameModel(o.Set, s.Set) {
				t.Errorf("%s %s: the stored form decodes to another model:\n%s", f, objects.String(o.Ref), o.Canon)
			}
			n++
		}
	}
	if n < 20 {
		t.Fatalf("only %d objects read from %d files", n, len(files))
	}
}

// fuzzInput takes the string of a Go fuzz corpus file.
func fuzzInput(data []byte) []byte {
	s := string(data)
	i, j := strings.Index(s, "string("), strings.LastIndex(s, ")")
	if i < 0 || j < i {
		return data
	}
	var out string
	if _, err := unquote(s[i+len("string("):j], &out); err != nil {
		return data
	}
	return []byte(out)
}

func mustStored(t *testing.T, o *objects.Object) *objects.Object {
	t.Helper()
	s, err := objects.Stored(o.Ref, o.Canon)
	if err != nil {
		t.Fatalf("%s: %v\n%s", objects.String(o.Ref), err, o.Canon)
	}
	return s
}

// sameModel compares two sets but for positions.
func sameModel(a, b *policy.Set) bool {
	zeroPos(reflect.ValueOf(a))
	zeroPos(reflect.ValueOf(b))
	return reflect.DeepEqual(a, b)
}

var posType = reflect.TypeOf(source.Pos{})

func zeroPos(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			zeroPos(v.Elem())
		}
	case reflect.Struct:
		if v.Type() == posType {
			if v.CanSet() {
				v.Set(reflect.Zero(posType))
			}
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				zeroPos(v.Field(i))
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			zeroPos(v.Index(i))
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			e := reflect.New(v.Type().Elem()).Elem()
			e.Set(v.MapIndex(k))
			zeroPos(e)
			v.SetMapIndex(k, e)
		}
	}
}

func unquote(s string, out *string) (int, error) {
	v, err := strconv.Unquote(s)
	if err != nil {
		return 0, err
	}
	*out = v
	return 1, nil
}

// A List whose items is a mapping gets one right error, from every reader.
func TestListItemsMustBeAList(t *testing.T) {
	_, errs := objects.Read("in.yaml", []byte("apiVersion: v1\nkind: List\nitems: {apiVersion: v1, kind: Namespace, metadata: {name: a}}\n"))
	if len(errs) != 1 || errs[0].Path != "items" || !strings.Contains(errs[0].Msg, "a list of objects") {
		t.Fatalf("errors: %v", errs)
	}
	_, errs = objects.Read("in.yaml", []byte("apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: List, items: []}]\n"))
	if len(errs) != 1 || !strings.Contains(errs[0].Msg, "may not contain a List") {
		t.Fatalf("nested: %v", errs)
	}
}

// The records the manager once took and every agent then refused are
// refused by the one workload validator, wherever a workload comes from.
func TestCheckWorkloadRefusesWhatAgentsCannotEnforce(t *testing.T) {
	good := api.InventoryWorkload{Namespace: "trading", Name: "buy-db", Labels: map[string]string{"role": "db"},
		IPs: []string{"10.0.0.1", "fd00::1"}, Ports: []api.NamedPort{{Name: "postgres", Port: 5432}, {Port: 9187}}}
	if _, errs := objects.CheckWorkload(good, ""); len(errs) > 0 {
		t.Fatalf("a good workload: %v", errs)
	}
	for name, mutate := range map[string]func(w *api.InventoryWorkload){
		"one address twice":    func(w *api.InventoryWorkload) { w.IPs = []string{"10.0.0.1", "10.0.0.1"} },
		"label key with space": func(w *api.InventoryWorkload) { w.Labels = map[string]string{"a b": "x"} },
		"label key with colon": func(w *api.InventoryWorkload) { w.Labels = map[string]string{"a:b": "x"} },
		"long label value":     func(w *api.InventoryWorkload) { w.Labels = map[string]string{"a": strings.Repeat("x", 64)} },
		"upper-case port name": func(w *api.InventoryWorkload) { w.Ports = []api.NamedPort{{Name: "HTTP", Port: 80}} },
		"long port name":       func(w *api.InventoryWorkload) { w.Ports = []api.NamedPort{{Name: "abcdefghijklmnop", Port: 80}} },
		"zoned address":        func(w *api.InventoryWorkload) { w.IPs = []string{"fe80::1%eth0"} },
		"port out of range":    func(w *api.InventoryWorkload) { w.Ports = []api.NamedPort{{Name: "x", Port: 65536}} },
		"bad namespace":        func(w *api.InventoryWorkload) { w.Namespace = "Trading" },
		"too many labels": func(w *api.InventoryWorkload) {
			w.Labels = map[string]string{}
			for i := range 200 {
				w.Labels["k"+strconv.Itoa(i)] = "v"
			}
		},
	} {
		w := good
		mutate(&w)
		if _, errs := objects.CheckWorkload(w, ""); len(errs) == 0 {
			t.Errorf("%s: accepted", name)
		}
	}
}
