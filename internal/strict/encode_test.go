package strict

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/source"
	"go.yaml.in/yaml/v3"
)

// marshalTree is Encode as it was first written: the value turned into
// maps and slices, written by encoding/json. Encode must write the same
// bytes, or every canonical form and hash would change.
func marshalTree(v any) []byte {
	b, err := json.Marshal(tree(reflect.ValueOf(v)))
	if err != nil {
		panic(err)
	}
	return b
}

func tree(v reflect.Value) any {
	if v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() || v.Type() == nodeType {
			return nil
		}
		return tree(v.Elem())
	}
	if v.Type() == iosType {
		ios := v.Interface().(IntOrString)
		if ios.IsStr {
			return ios.Str
		}
		return ios.Int
	}
	switch v.Kind() {
	case reflect.Struct:
		out := map[string]any{}
		fs, _ := fields(v.Type())
		for name, f := range fs {
			if fv := v.FieldByIndex(f.index); !omitted(fv) {
				out[name] = tree(fv)
			}
		}
		return out
	case reflect.Map:
		out := make(map[string]any, v.Len())
		for it := v.MapRange(); it.Next(); {
			out[it.Key().String()] = tree(it.Value())
		}
		return out
	case reflect.Slice:
		out := make([]any, v.Len())
		for i := range out {
			out[i] = tree(v.Index(i))
		}
		return out
	case reflect.String:
		return v.String()
	case reflect.Bool:
		return v.Bool()
	case reflect.Int, reflect.Int32, reflect.Int64:
		return v.Int()
	}
	panic("unsupported " + v.Type().String())
}

type label string

type encInner struct {
	Pos    source.Pos
	Name   string            `json:"name"`
	Labels map[label]string  `json:"labels"`
	Any    map[string]*int64 `json:"any"`
}

type encOuter struct {
	Pos      source.Pos
	Raw      *yaml.Node        `json:"raw"`
	Zeta     string            `json:"zeta"`
	Alpha    *encInner         `json:"alpha"`
	Items    []*encInner       `json:"items,omitempty"`
	Nodes    []*yaml.Node      `json:"nodes"`
	Port     IntOrString       `json:"port"`
	Ports    []IntOrString     `json:"ports"`
	On       bool              `json:"on"`
	N        int               `json:"n"`
	N32      int32             `json:"n32"`
	Lists    [][]string        `json:"lists"`
	Maps     []map[string]bool `json:"maps"`
	Empty    *struct{}         `json:"empty"`
	Untagged string
	skipped  string
	Dash     string `json:"-"`
}

func TestEncodeWritesWhatMarshalWrote(t *testing.T) {
	seven := int64(-7)
	values := []any{
		&encOuter{},
		&encOuter{Zeta: "z", Alpha: &encInner{}, Items: []*encInner{nil, {Name: "a"}}, Nodes: []*yaml.Node{{}},
			Port: IntOrString{Int: 80, Exists: true}, Ports: []IntOrString{{Str: "http", IsStr: true, Exists: true}, {}},
			On: true, N: -3, N32: 1 << 30, Lists: [][]string{nil, {}, {"x"}}, Maps: []map[string]bool{nil, {"b": true, "a": false}},
			Empty: &struct{}{}, Untagged: "u", skipped: "s", Dash: "d"},
		&encInner{Name: "<a&b>\"\\\b\f\n\r\t\x00\x1f\x7f é \u2028\u2029 \xff\xfe", Labels: map[label]string{"b": "1", "a": "", "é": "<", "A": "x"},
			Any: map[string]*int64{"n": nil, "s": &seven}},
		map[string]any{"k": []any{nil, "v", true, 3}},
		(*encInner)(nil),
	}
	for i, v := range values {
		got, err := Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		if want := marshalTree(v); string(got) != string(want) {
			t.Errorf("value %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

func FuzzEncodeString(f *testing.F) {
	for _, s := range []string{"", "plain", "<>&", "\u2028\xff", "a\"b\\c\x01"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, name, key string) {
		v := &encInner{Name: name, Labels: map[label]string{label(key): name, "k": key}}
		got, _ := Encode(v)
		if want := marshalTree(v); string(got) != string(want) {
			t.Fatalf("%q %q:\n got %s\nwant %s", name, key, got, want)
		}
	})
}
