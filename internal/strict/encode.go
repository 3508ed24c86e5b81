package strict

import (
	"reflect"
	"slices"
	"strconv"
	"unicode/utf8"
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
//
// The bytes are those encoding/json.Marshal writes for the same value
// turned into maps and slices (keys sorted bytewise, strings escaped as it
// escapes them, HTML characters included), written directly: canonical
// forms and their hashes stay what they were.
func Encode(v any) ([]byte, error) {
	return appendValue(make([]byte, 0, 256), reflect.ValueOf(v)), nil
}

func appendValue(b []byte, v reflect.Value) []byte {
	if v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() || v.Type() == nodeType {
			return append(b, "null"...)
		}
		return appendValue(b, v.Elem())
	}
	if v.Type() == iosType {
		ios := v.Interface().(IntOrString)
		if ios.IsStr {
			return appendString(b, ios.Str)
		}
		return strconv.AppendInt(b, int64(ios.Int), 10)
	}
	switch v.Kind() {
	case reflect.Struct:
		b = append(b, '{')
		first := true
		for _, f := range cachedFields(v.Type()).sorted {
			fv := v.FieldByIndex(f.index)
			if omitted(fv) {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = appendString(b, f.name)
			b = append(b, ':')
			b = appendValue(b, fv)
		}
		return append(b, '}')
	case reflect.Map:
		keys := make([]string, 0, v.Len())
		for it := v.MapRange(); it.Next(); {
			keys = append(keys, it.Key().String())
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendValue(b, v.MapIndex(reflect.ValueOf(k).Convert(v.Type().Key())))
		}
		return append(b, '}')
	case reflect.Slice:
		b = append(b, '[')
		for i := range v.Len() {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendValue(b, v.Index(i))
		}
		return append(b, ']')
	case reflect.String:
		return appendString(b, v.String())
	case reflect.Bool:
		return strconv.AppendBool(b, v.Bool())
	case reflect.Int, reflect.Int32, reflect.Int64:
		return strconv.AppendInt(b, v.Int(), 10)
	}
	panic("strict: unsupported field type " + v.Type().String())
}

const hexDigits = "0123456789abcdef"

// appendString writes s as encoding/json does with HTML escaping on: <, >
// and & as \u escapes, invalid UTF-8 as \ufffd, U+2028 and U+2029
// escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
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
