package manager

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/manager/credentials"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// TestMirrorRefusesValuesOfTheWrongShape: a value under a prefix that
// does not decode into the record its key names (a string where a host's
// status belongs, a list where a certificate belongs), or a key the
// manager keeps no record at, is refused where it enters the copy: every
// reader, background loops and handlers alike, sees nothing there, and
// it is raised once per key as an alert that counts every refusal; it
// never panics, and it authenticates nobody. A value of the wrong shape
// over a good one removes the good one: a token so overwritten
// authenticates nobody.
func TestMirrorRefusesValuesOfTheWrongShape(t *testing.T) {
	m, st, ctx := newInternal(t, Config{})
	good, _, err := m.createToken(ctx, system, "bhm2-good", "admin", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	wrong := map[string]string{
		prefixHosts + "bhtm-h1":                                          `"a string"`,
		prefixHosts + "bhtm-h2/other":                                    `{}`,
		credentials.PrefixCerts + "bhtmc1":                               `[1]`,
		credentials.PrefixTokens + credentials.HashSecret("bhtm-secret"): `[]`,
		credentials.PrefixJoin + "bhtmj1":                                `7`,
		workloadKey("bhtm-h1", "bhtm-ns", "bhtm-w1"):                     `"w"`,
		identityKey(4242):                                                `[]`,
		keyHead:                                                          `"head"`,
		prefixRevisions + "bhtm-r1":                                      `[]`,
		prefixFeed + "bhtm-other":                                        `{}`,
	}
	ops := []store.Op{}
	for key, value := range wrong {
		ops = append(ops, store.Put(key, []byte(value)))
	}
	if _, _, err := st.Txn(ctx, nil, ops); err != nil {
		t.Fatal(err)
	}
	m.run()
	defer m.Close()
	if err := m.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	goodKey := credentials.PrefixTokens + credentials.HashSecret(good.Secret)
	if _, ok := m.tab.tokens.Get(goodKey); !ok {
		t.Fatal("the good token is not in the copy")
	}
	rev, _, err := st.Txn(ctx, nil, []store.Op{store.Put(goodKey, []byte(`"overwritten"`))})
	if err != nil {
		t.Fatal(err)
	}
	wrong[goodKey] = `"overwritten"`
	if err := m.auth.WaitRev(ctx, rev); err != nil {
		t.Fatal(err)
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
	safe("the collector", func() { m.collectIdentities(ctx) })
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
		for _, secret := range []string{"bhtm-secret", good.Secret} {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Authorization", "Bearer "+secret)
			if p, err := m.authenticate(r); err == nil {
				t.Errorf("a list under a token's key authenticates %v", p)
			}
		}
	})
	safe("stillValid", func() {
		if err := m.stillValid(principal{kind: "host", name: "bhtm-h1", serial: "bhtmc1"}); err == nil {
			t.Errorf("a list under a certificate's key keeps a stream valid")
		}
	})

	// Each key is one alert, counting every refusal; the loops are
	// stopped first so that the counts hold still.
	m.Close()
	var refused int64
	for _, mi := range m.mirrors() {
		refused += mi.Refused()
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
	if counted != refused || refused < int64(len(wrong)) {
		t.Errorf("alerts count %d refusals, the mirrors %d; want the same, at least one per key (%d)", counted, refused, len(wrong))
	}
}
