package logprefix

import (
	"strings"
	"testing"
)

func TestFormatParse(t *testing.T) {
	long := "Policy/app/" + strings.Repeat("x", 200) + "/ingress/0"
	for _, c := range []struct{ kind, id, wantID string }{
		{Deny, "Policy/app/x/ingress/0", "Policy/app/x/ingress/0"},
		{Spoofed, "", ""},
		{Reject, long, "#" + Tag(long)},
	} {
		p := Format(c.kind, c.id)
		if len(p) > max {
			t.Errorf("%q: %d bytes, more than %d", p, len(p), max)
		}
		kind, id, ok := Parse(p + "\x00")
		if !ok || kind != c.kind || id != c.wantID {
			t.Errorf("Parse(Format(%q, %q)) = %q, %q, %v", c.kind, c.id, kind, id, ok)
		}
	}
	if _, _, ok := Parse("other prefix"); ok {
		t.Error("a prefix not the dataplane's parsed")
	}
}
