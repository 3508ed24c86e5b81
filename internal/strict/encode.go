package strict

import (
	"encoding/json"
	"reflect"
)

// Encode writes v, a value Decode filled, as canonical JSON: each field by
// its json name, map keys sorted, positions and raw nodes left out, and a
// field left out when Decode would leave it as it is without it (a nil
// pointer, slice or map, a zero number or string, false, an IntOrString
// that was not given). A non-nil pointer, slice or map is kept even when
// empty: `podSelector: {}` and no podSelector mean different things.
//
// Encode is the counterpart of Decode: Decode of Encode's output fills an
// equal value (but for positions), because every scalar is written as the
// type it was read into. That is what makes the canonical form of an
// object the object that was validated: a generic YAML decode would read
// a label value written 0x10 as the number 16.
func Encode(v any) ([]byte, error) {
	return json.Marshal(tree(reflect.ValueOf(v)))
}

// tree turns v into maps, slices and scalars that encoding/json writes
// in canonical form (it sorts map keys).
func tree(v reflect.Value) any {
	if v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return nil
		}
		if v.Type() == nodeType {
			return nil
		}
		return tree(v.Elem())
	}
	switch {
	case v.Type() == iosType:
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
			fv := v.FieldByIndex(f.index)
			if omitted(fv) {
				continue
			}
			out[name] = tree(fv)
		}
		return out
	case reflect.Map:
		out := make(map[string]any, v.Len())
		it := v.MapRange()
		for it.Next() {
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
	panic("strict: unsupported field type " + v.Type().String())
}

// omitted says whether a field is left out of the canonical form.
func omitted(v reflect.Value) bool {
	switch {
	case v.Type() == nodeType:
		return true
	case v.Type() == iosType:
		return !v.Interface().(IntOrString).Exists
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Slice, reflect.Map:
		return v.IsNil()
	case reflect.String:
		return v.Len() == 0
	case reflect.Bool:
		return !v.Bool()
	case reflect.Int, reflect.Int32, reflect.Int64:
		return v.Int() == 0
	}
	return false
}
