// Package strict decodes YAML and JSON documents into Go structs strictly:
// unknown fields and wrong types are errors that name the file, line,
// column, field path and what would be valid, and every error of a document
// is reported, not only the first.
//
// Struct fields are named by their json tag. A field of type source.Pos
// named Pos receives the position of the mapping it was decoded from. A
// field of type *yaml.Node receives the raw node.
package strict

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/bulkhead-dev/bulkhead/internal/source"
	"go.yaml.in/yaml/v3"
)

// IntOrString is a value written either as a number or as a name, like a
// Kubernetes port.
type IntOrString struct {
	Int    int
	Str    string
	IsStr  bool
	Exists bool
}

func (v IntOrString) String() string {
	if v.IsStr {
		return v.Str
	}
	return strconv.Itoa(v.Int)
}

var (
	posType   = reflect.TypeOf(source.Pos{})
	nodeType  = reflect.TypeOf(&yaml.Node{})
	iosType   = reflect.TypeOf(IntOrString{})
	maxLength = 1 << 20
)

// Decode fills out (a pointer) from node. file names the document's file in
// errors, and path is the field path of node ("" for the top).
func Decode(file string, node *yaml.Node, path string, out any) source.Errors {
	d := &decoder{file: file}
	d.value(node, path, reflect.ValueOf(out).Elem())
	return d.errs
}

type decoder struct {
	file string
	errs source.Errors
}

func (d *decoder) pos(n *yaml.Node) source.Pos {
	return source.Pos{File: d.file, Line: n.Line, Column: n.Column}
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.errs.Add(d.pos(n), path, format, args...)
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "an alias"
}

func (d *decoder) value(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind == yaml.AliasNode {
		d.fail(n, path, "aliases are not accepted; write the value out")
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" && v.Kind() != reflect.Struct {
		return // null leaves the zero value
	}
	switch {
	case v.Type() == nodeType:
		v.Set(reflect.ValueOf(n))
		return
	case v.Type() == iosType:
		d.intOrString(n, path, v)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		nv := reflect.New(v.Type().Elem())
		d.value(n, path, nv.Elem())
		v.Set(nv)
	case reflect.Struct:
		d.structure(n, path, v)
	case reflect.Map:
		d.mapping(n, path, v)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, path, "expected a list, found %s", kindName(n))
			return
		}
		if len(n.Content) > maxLength {
			d.fail(n, path, "list of %d items is longer than the limit of %d", len(n.Content), maxLength)
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.value(c, path+"["+strconv.Itoa(i)+"]", s.Index(i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, path, "expected a string, found %s", kindName(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		b, err := strconv.ParseBool(n.Value)
		if n.Kind != yaml.ScalarNode || err != nil || n.Tag == "!!str" {
			d.fail(n, path, "expected true or false, found %s", kindName(n))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int32, reflect.Int64:
		i, ok := scalarInt(n)
		if !ok {
			d.fail(n, path, "expected an integer, found %s", kindName(n))
			return
		}
		if v.OverflowInt(i) {
			d.fail(n, path, "integer %d is out of range", i)
			return
		}
		v.SetInt(i)
	default:
		panic("strict: unsupported field type " + v.Type().String())
	}
}

func scalarInt(n *yaml.Node) (int64, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!str" {
		return 0, false
	}
	i, err := strconv.ParseInt(n.Value, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(n.Value, 64) // JSON numbers like 80.0
		if ferr != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			return 0, false
		}
		return int64(f), true
	}
	return i, true
}

func (d *decoder) intOrString(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "expected a number or a name, found %s", kindName(n))
		return
	}
	out := IntOrString{Exists: true}
	if i, ok := scalarInt(n); ok && n.Tag != "!!str" {
		if i < math.MinInt32 || i > math.MaxInt32 {
			d.fail(n, path, "integer %d is out of range", i)
			return
		}
		out.Int = int(i)
	} else {
		out.Str, out.IsStr = n.Value, true
	}
	v.Set(reflect.ValueOf(out))
}

func (d *decoder) mapping(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping, found %s", kindName(n))
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		kp := path + "." + k.Value
		if m.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
			d.fail(k, kp, "duplicate key %q", k.Value)
			continue
		}
		ev := reflect.New(v.Type().Elem()).Elem()
		d.value(val, kp, ev)
		m.SetMapIndex(reflect.ValueOf(k.Value), ev)
	}
	v.Set(m)
}

type fieldInfo struct {
	index []int
	name  string
	ord   int // the field's place among its struct's decoded fields
}

// decodedFields is what fields found of a struct type; the callers only
// read it.
type decodedFields struct {
	byName   map[string]fieldInfo
	sorted   []fieldInfo // byName's fields by name, as Encode writes them
	posIndex []int
}

// decodeFieldCache keeps fields' answer per type: the reflection it does is a
// fifth of reading a large document otherwise.
var decodeFieldCache sync.Map // reflect.Type → *decodedFields

// fields maps the json names of t's fields to their indexes, and gives
// the index of its Pos field (nil when none). The map is shared: read it
// only.
func fields(t reflect.Type) (map[string]fieldInfo, []int) {
	sf := cachedFields(t)
	return sf.byName, sf.posIndex
}

func cachedFields(t reflect.Type) *decodedFields {
	if c, ok := decodeFieldCache.Load(t); ok {
		return c.(*decodedFields)
	}
	byName, posIndex := structFieldsOf(t)
	sorted := make([]fieldInfo, 0, len(byName))
	for _, f := range byName {
		sorted = append(sorted, f)
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	sf := &decodedFields{byName: byName, sorted: sorted, posIndex: posIndex}
	decodeFieldCache.Store(t, sf)
	return sf
}

func structFieldsOf(t reflect.Type) (map[string]fieldInfo, []int) {
	out := map[string]fieldInfo{}
	var posIndex []int
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Type == posType && f.Name == "Pos" {
			posIndex = f.Index
			continue
		}
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = fieldInfo{index: f.Index, name: name}
	}
	ord := 0
	for name, f := range out {
		f.ord = ord
		out[name] = f
		ord++
	}
	return out, posIndex
}

func (d *decoder) structure(n *yaml.Node, path string, v reflect.Value) {
	fs, posIndex := fields(v.Type())
	if posIndex != nil {
		v.FieldByIndex(posIndex).Set(reflect.ValueOf(d.pos(n)))
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping, found %s", kindName(n))
		return
	}
	seen := newFieldSet(len(fs))
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		kp := k.Value
		if path != "" {
			kp = path + "." + k.Value
		}
		f, ok := fs[k.Value]
		if !ok {
			d.fail(k, kp, "unknown field %q; valid fields here: %s", k.Value, validNames(fs))
			continue
		}
		if seen.has(f.ord) {
			d.fail(k, kp, "duplicate field %q", k.Value)
			continue
		}
		seen.add(f.ord)
		d.value(val, kp, v.FieldByIndex(f.index))
	}
}

// fieldSet is the set of the fields of one mapping given so far: a word
// of bits for most structs, more words for larger ones.
type fieldSet struct {
	small uint64
	large []uint64
}

func newFieldSet(n int) fieldSet {
	if n <= 64 {
		return fieldSet{}
	}
	return fieldSet{large: make([]uint64, (n+63)/64)}
}

func (s *fieldSet) has(i int) bool {
	if s.large == nil {
		return s.small&(1<<i) != 0
	}
	return s.large[i/64]&(1<<(i%64)) != 0
}

func (s *fieldSet) add(i int) {
	if s.large == nil {
		s.small |= 1 << i
		return
	}
	s.large[i/64] |= 1 << (i % 64)
}

func validNames(fs map[string]fieldInfo) string {
	names := make([]string, 0, len(fs))
	for n := range fs {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
