package manager

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/manager/credentials"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// TestMirrorSkipsValuesOfAnotherType: a value under a prefix that is not
// of the type its readers want (a certificate where a host's status
// belongs, a host's status where a certificate or a workload belongs) is
// skipped by every reader, background loops and handlers alike, and
// raised once per key as an alert that counts every skip; it never
// panics, and it authenticates nobody.
func TestMirrorSkipsValuesOfAnotherType(t *testing.T) {
	m, st, ctx := newInternal(t, Config{})
	// The values enter the way every value does, through the mirror's
	// decoder, which for these keys yields a record of another kind.
	wrong := map[string]any{
		prefixHosts + "bhtm-h1":                                          &credentials.Cert{Serial: "bhtm-c0", Host: "bhtm-h1"},
		credentials.PrefixCerts + "bhtmc1":                               &hostRecord{},
		credentials.PrefixTokens + credentials.HashSecret("bhtm-secret"): &credentials.Cert{Serial: "bhtm-t1"},
		credentials.PrefixJoin + "bhtmj1":                                &hostRecord{},
		workloadKey("bhtm-h1", "bhtm-ns", "bhtm-w1"):                     &hostRecord{},
		identityKey(4242):                                                &credentials.Cert{},
		keyHead:                                                          &hostRecord{},
		prefixRevisions + "bhtm-r1":                                      &credentials.Cert{},
	}
	for _, mi := range []*mirror{m.auth, m.feed, m.hosts, m.revisions} {
		decode := mi.decode
		mi.decode = func(kv store.KV) (any, error) {
			if v, ok := wrong[kv.Key]; ok {
				return v, nil
			}
			return decode(kv)
		}
	}
	ops := []store.Op{}
	for key := range wrong {
		ops = append(ops, store.Put(key, []byte(`{}`)))
	}
	rev, _, err := st.Txn(ctx, nil, ops)
	if err != nil {
		t.Fatal(err)
	}
	m.run()
	defer m.Close()
	for _, mi := range []*mirror{m.auth, m.feed, m.hosts, m.revisions} {
		if err := mi.waitRev(ctx, rev); err != nil {
			t.Fatal(err)
		}
	}

	safe := func(what string, fn func()) {
		t.Helper()
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("%s panicked on a value of another type: %v", what, r)
			}
		}()
		fn()
	}
	// Background loops.
	m.hostTab.report("bhtm-h1", hostRecord{LastSeen: m.now()})
	safe("the status writer", func() { m.writeStatuses(ctx) })
	safe("reidentify", func() { m.reidentify(ctx, true) })
	safe("the revision finder", func() { _, _ = m.record(ctx, 1<<40) })
	// Handlers, and authentication.
	type handler = func(http.ResponseWriter, *http.Request, principal) error
	for name, h := range map[string]handler{"certificates": m.getCertificates, "tokens": m.getTokens,
		"join tokens": m.getJoinTokens, "hosts": m.getHosts, "identities": m.getIdentities, "workloads": m.getWorkloads} {
		safe("GET "+name, func() {
			w := httptest.NewRecorder()
			if err := h(w, httptest.NewRequest("GET", "/", nil), principal{}); err != nil {
				t.Errorf("GET %s: %v", name, err)
			}
			if name != "hosts" && strings.Contains(w.Body.String(), "bhtm") {
				t.Errorf("GET %s shows a value of another type: %s", name, w.Body.String())
			}
		})
	}
	safe("authenticate", func() {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", "Bearer bhtm-secret")
		if p, err := m.authenticate(r); err == nil {
			t.Errorf("a certificate record under a token's key authenticates %v", p)
		}
	})
	safe("stillValid", func() {
		if err := m.stillValid(principal{kind: "host", name: "bhtm-h1", serial: "bhtmc1"}); err == nil {
			t.Errorf("a host's status under a certificate's key keeps a stream valid")
		}
	})

	// Each key is one alert, counting every skip; the loops are stopped
	// first so that the counts hold still.
	m.Close()
	var skipped int64
	for _, mi := range []*mirror{m.auth, m.feed, m.hosts, m.revisions} {
		skipped += mi.wrong.Load()
	}
	m.alerts.mu.Lock()
	defer m.alerts.mu.Unlock()
	var counted int64
	for key := range wrong {
		al := m.alerts.items["record-type "+key]
		if al == nil {
			t.Errorf("no alert for %s", key)
			continue
		}
		counted += int64(al.Count)
	}
	if counted != skipped || skipped < int64(len(wrong)) {
		t.Errorf("alerts count %d skips, the mirrors %d; want the same, at least one per key (%d)", counted, skipped, len(wrong))
	}
}
