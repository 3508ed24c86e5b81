package strict_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/strict"
)

type inner struct {
	Port int `json:"port"`
}

type embedded struct {
	Kind string `json:"kind"`
}

type request struct {
	embedded
	Host    string            `json:"host"`
	Labels  map[string]string `json:"labels,omitempty"`
	Items   []inner           `json:"items,omitempty"`
	Ptr     *inner            `json:"ptr,omitempty"`
	When    time.Time         `json:"when,omitzero"`
	Raw     json.RawMessage   `json:"raw,omitempty"`
	Any     any               `json:"any,omitempty"`
	Skipped string            `json:"-"`
}

func TestJSONAccepts(t *testing.T) {
	var r request
	body := `{"kind":"k","host":"h","labels":{"a":"b","A":"c"},"items":[{"port":1}],"ptr":{"port":2},
		"when":"2026-01-02T03:04:05Z","raw":{"x":1},"any":[{"y":"\ud83d\ude00 é"}]}`
	if err := strict.JSON([]byte(body), &r); err != nil {
		t.Fatal(err)
	}
	if r.Kind != "k" || r.Host != "h" || r.Labels["A"] != "c" || r.Items[0].Port != 1 || r.Ptr.Port != 2 || r.When.Year() != 2026 {
		t.Fatalf("%+v", r)
	}
}

func TestJSONRefuses(t *testing.T) {
	for _, c := range []struct{ name, body, want string }{
		{"case-folded key", `{"Host":"h"}`, `field "Host" at byte 7: keys are matched exactly, and case matters; did you mean "host"?`},
		{"case-folded nested key", `{"items":[{"PORT":1}]}`, `field "items[0].PORT"`},
		{"case-folded embedded key", `{"KIND":"x"}`, `did you mean "kind"?`},
		{"duplicate key", `{"host":"a","host":"b"}`, `field "host" at byte 18 is given twice (first at byte 7)`},
		{"duplicate map key", `{"labels":{"a":"1","a":"2"}}`, `field "labels.a" at byte 22 is given twice`},
		{"duplicate key in free-form", `{"any":{"x":1,"x":2}}`, `field "any.x"`},
		{"duplicate key in raw", `{"raw":{"x":1,"x":2}}`, `field "raw.x"`},
		{"unknown key", `{"hots":"h"}`, `unknown field "hots" at byte 7; valid: any, host, items, kind, labels, ptr, raw, when`},
		{"skipped field", `{"Skipped":"h"}`, `unknown field "Skipped"`},
		{"invalid UTF-8", "{\"host\":\"a\xffb\"}", "invalid UTF-8 at byte 10"},
		{"invalid UTF-8 in key", "{\"ho\xc3st\":\"a\"}", "invalid UTF-8 at byte 4"},
		{"lone high surrogate", `{"host":"a\ud800b"}`, `a lone UTF-16 surrogate escape at byte 10`},
		{"lone low surrogate", `{"host":"\udc00"}`, `surrogate escape at byte 9`},
		{"reversed pair", `{"host":"\ude00\ud83d"}`, `surrogate escape at byte 9`},
		{"wrong type", `{"host":1}`, `field "host": got JSON number, want string`},
		{"trailing data", `{"host":"h"} {}`, `data after the JSON value`},
		{"malformed", `{"host":}`, `malformed JSON at byte`},
		{"empty", `  `, `empty`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r request
			err := strict.JSON([]byte(c.body), &r)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
}

// An escaped backslash before a u is not an escape.
func TestJSONEscapedBackslash(t *testing.T) {
	var r request
	if err := strict.JSON([]byte(`{"host":"\\ud800"}`), &r); err != nil || r.Host != `\ud800` {
		t.Fatalf("%q %v", r.Host, err)
	}
}
