package strict

import (
	"reflect"
	"strconv"
	"testing"

	"go.yaml.in/yaml/v3"
)

func decodeYAML(t *testing.T, doc string, out any) []string {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range Decode("in.yaml", n.Content[0], "", out) {
		msgs = append(msgs, e.Error())
	}
	return msgs
}

// A field given twice is refused where it is given the second time, in a
// struct of a few fields and in one of more than 64.
func TestDuplicateField(t *testing.T) {
	var small encInner
	got := decodeYAML(t, "name: a\nlabels: {}\nname: b\n", &small)
	if want := []string{`in.yaml:3:1: name: duplicate field "name"`}; !reflect.DeepEqual(got, want) {
		t.Errorf("small struct: %q, want %q", got, want)
	}
	var fs []reflect.StructField
	for i := range 70 {
		fs = append(fs, reflect.StructField{Name: "F" + strconv.Itoa(i), Type: reflect.TypeOf(""), Tag: reflect.StructTag(`json:"f` + strconv.Itoa(i) + `"`)})
	}
	large := reflect.New(reflect.StructOf(fs)).Interface()
	got = decodeYAML(t, "f69: a\nf0: b\nf65: c\nf69: d\nf0: e\n", large)
	want := []string{`in.yaml:4:1: f69: duplicate field "f69"`, `in.yaml:5:1: f0: duplicate field "f0"`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("large struct: %q, want %q", got, want)
	}
}
