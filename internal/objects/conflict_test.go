package objects_test

import (
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/objects"
)

// A conflict class's scope: how long a binding lasts. A document written
// before the time window and the session existed reads as it did.
func TestConflictClassScopes(t *testing.T) {
	const head = "apiVersion: bulkhead.dev/v1\nkind: ConflictClass\nmetadata: {name: c}\n" +
		"spec: {datasets: [{name: a, segment: sa}, {name: b, segment: sb}]"
	for _, tc := range []struct {
		spec   string
		scope  string
		window time.Duration
		err    string
	}{
		{spec: "", scope: "lifecycle"},
		{spec: ", scope: permanent", scope: "permanent"},
		{spec: ", scope: window, window: 8h", scope: "window", window: 8 * time.Hour},
		{spec: ", scope: session", scope: "session"},
		{spec: ", scope: session, window: 30m", scope: "session", window: 30 * time.Minute},
		{spec: ", scope: window", err: "spec.window"},
		{spec: ", scope: lifecycle, window: 1h", err: "spec.window"},
		{spec: ", scope: permanent, window: 1h", err: "spec.window"},
		{spec: ", scope: window, window: 1ms", err: "spec.window"},
		{spec: ", scope: window, window: 9000h", err: "spec.window"},
		{spec: ", scope: forever", err: "valid: lifecycle, permanent, window, session"},
	} {
		objs, errs := objects.Read("c.yaml", []byte(head+tc.spec+"}\n"))
		if tc.err != "" {
			if len(errs) == 0 || !strings.Contains(errs.Error(), tc.err) {
				t.Errorf("%q: errors %v, want one naming %s", tc.spec, errs, tc.err)
			}
			continue
		}
		if len(errs) > 0 {
			t.Errorf("%q: %v", tc.spec, errs)
			continue
		}
		cc := objs[0].Set.ConflictClasses[0]
		if cc.Scope != tc.scope || cc.Window != tc.window {
			t.Errorf("%q: scope %q window %s, want %q %s", tc.spec, cc.Scope, cc.Window, tc.scope, tc.window)
		}
		stored := mustStored(t, objs[0]).Set.ConflictClasses[0]
		if stored.Scope != cc.Scope || stored.Window != cc.Window {
			t.Errorf("%q: stored as scope %q window %s", tc.spec, stored.Scope, stored.Window)
		}
	}
}
