package strict

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"sync"
	"unicode/utf8"
)

// JSON decodes one JSON value from data into v, refusing what
// encoding/json would let through quietly: a key that matches a field
// only when case is ignored, a key given twice (encoding/json keeps the
// last), a key no field has, invalid UTF-8 and lone UTF-16 surrogates
// (encoding/json replaces both with U+FFFD), and data after the value.
// Errors name the field path and the byte offset.
//
// Every request body the manager reads is decoded by JSON, so that what a
// client sends is exactly what was validated.
func JSON(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return errors.New("empty; send a JSON value")
	}
	if !utf8.Valid(data) {
		return fmt.Errorf("invalid UTF-8 at byte %d; JSON text must be UTF-8", invalidUTF8At(data))
	}
	if off, ok := loneSurrogate(data); !ok {
		return fmt.Errorf("a lone UTF-16 surrogate escape at byte %d; a \\uD800–\\uDBFF escape must be followed by a \\uDC00–\\uDFFF one", off)
	}
	w := &jsonWalker{dec: json.NewDecoder(bytes.NewReader(data))}
	w.dec.UseNumber()
	if err := w.value(reflect.TypeOf(v), ""); err != nil {
		return err
	}
	if _, err := w.dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("data after the JSON value at byte %d", w.dec.InputOffset())
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return jsonError(dec.Decode(v))
}

// jsonError rewords encoding/json's errors to name the field and offset.
func jsonError(err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &typeErr):
		return fmt.Errorf("field %q: got JSON %s, want %s (at byte %d)", typeErr.Field, typeErr.Value, typeErr.Type, typeErr.Offset)
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("malformed JSON at byte %d: %v", syntaxErr.Offset, err)
	}
	return err
}

func invalidUTF8At(data []byte) int {
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(data)
}

// loneSurrogate finds a \uXXXX escape of a UTF-16 surrogate that is not
// half of a pair. It reads escapes inside strings only; the syntax itself
// is checked by the decoder.
func loneSurrogate(data []byte) (int, bool) {
	inString := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch {
		case !inString:
			inString = c == '"'
		case c == '"':
			inString = false
		case c == '\\' && i+1 < len(data):
			i++
			if data[i] != 'u' {
				continue
			}
			r, ok := hex4(data, i+1)
			switch {
			case !ok:
				continue // a syntax error the decoder reports
			case r >= 0xD800 && r <= 0xDBFF:
				low, ok := hex4(data, i+7)
				if !ok || i+6 >= len(data) || data[i+5] != '\\' || data[i+6] != 'u' || low < 0xDC00 || low > 0xDFFF {
					return i - 1, false
				}
				i += 10
			case r >= 0xDC00 && r <= 0xDFFF:
				return i - 1, false
			default:
				i += 4
			}
		}
	}
	return 0, true
}

func hex4(data []byte, at int) (rune, bool) {
	if at < 0 || at+4 > len(data) {
		return 0, false
	}
	var r rune
	for _, c := range data[at : at+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// jsonWalker reads the token stream alongside the Go type it is meant
// for. A nil type accepts any value (an interface, a map's free-form
// value, a type with its own UnmarshalJSON) but still refuses repeated
// keys.
type jsonWalker struct {
	dec *json.Decoder
}

var unmarshalerType = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()

// target is the type a JSON value decodes into, without pointers; nil
// when anything goes.
func target(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		if t.Implements(unmarshalerType) {
			return nil
		}
		t = t.Elem()
	}
	if t == nil || t.Kind() == reflect.Interface || reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	return t
}

func (w *jsonWalker) value(t reflect.Type, path string) error {
	tok, err := w.dec.Token()
	if err != nil {
		return jsonError(err)
	}
	t = target(t)
	switch tok {
	case json.Delim('{'):
		return w.object(t, path)
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; w.dec.More(); i++ {
			if err := w.value(elem, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err := w.dec.Token()
		return jsonError(err)
	}
	return nil
}

func (w *jsonWalker) object(t reflect.Type, path string) error {
	var fields map[string]reflect.Type
	var elem reflect.Type
	switch {
	case t != nil && t.Kind() == reflect.Struct:
		fields = structFields(t)
	case t != nil && t.Kind() == reflect.Map:
		elem = t.Elem()
	}
	seen := map[string]int64{}
	for w.dec.More() {
		tok, err := w.dec.Token()
		if err != nil {
			return jsonError(err)
		}
		key, _ := tok.(string)
		at := w.dec.InputOffset()
		where := join(path, key)
		if first, dup := seen[key]; dup {
			return fmt.Errorf("field %q at byte %d is given twice (first at byte %d); give each key once", where, at, first)
		}
		seen[key] = at
		next := elem
		if fields != nil {
			ft, ok := fields[key]
			if !ok {
				return unknownField(fields, where, key, at)
			}
			next = ft
		}
		if err := w.value(next, where); err != nil {
			return err
		}
	}
	_, err := w.dec.Token()
	return jsonError(err)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func unknownField(fields map[string]reflect.Type, where, key string, at int64) error {
	names := make([]string, 0, len(fields))
	for n := range fields {
		if strings.EqualFold(n, key) {
			return fmt.Errorf("field %q at byte %d: keys are matched exactly, and case matters; did you mean %q?", where, at, n)
		}
		names = append(names, n)
	}
	sort.Strings(names)
	return fmt.Errorf("unknown field %q at byte %d; valid: %s", where, at, strings.Join(names, ", "))
}

var fieldCache sync.Map // reflect.Type → map[string]reflect.Type

// structFields maps the JSON names of a struct's fields, those of
// embedded structs included, to their types, as encoding/json names them.
func structFields(t reflect.Type) map[string]reflect.Type {
	if v, ok := fieldCache.Load(t); ok {
		return v.(map[string]reflect.Type)
	}
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if name == "" && f.Anonymous && ft.Kind() == reflect.Struct {
			for n, typ := range structFields(ft) {
				if _, ok := out[n]; !ok {
					out[n] = typ
				}
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	fieldCache.Store(t, out)
	return out
}
