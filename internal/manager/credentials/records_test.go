package credentials_test

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/credentials"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

func TestDecodeByKey(t *testing.T) {
	for key, want := range map[string]string{
		credentials.PrefixTokens + "ab":     "*credentials.Token",
		credentials.PrefixJoin + "ab":       "*credentials.Join",
		credentials.PrefixCerts + "01":      "*credentials.Cert",
		credentials.PrefixTokenNames + "al": "string",
	} {
		v, err := credentials.Decode(store.KV{Key: key, Value: []byte(`{"host":"h"}`)})
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		if got := fmt.Sprintf("%T", v); got != want {
			t.Errorf("%s: decoded as %s, want %s", key, got, want)
		}
	}
	if _, err := credentials.Decode(store.KV{Key: credentials.PrefixCerts + "01", Value: []byte(`{`)}); err == nil {
		t.Error("a record that is not JSON decoded")
	}
}

func TestSecrets(t *testing.T) {
	a, err := credentials.NewSecret(credentials.TokenPrefix)
	b, _ := credentials.NewSecret(credentials.TokenPrefix)
	if err != nil || a == b || !strings.HasPrefix(a, "bh_") || len(a) != 3+43 {
		t.Fatalf("secrets %q %q: %v", a, b, err)
	}
	if h := credentials.HashSecret(a); len(h) != 64 || h == credentials.HashSecret(b) || len(credentials.JoinTokenID(h)) != 16 {
		t.Fatalf("hash %q", h)
	}
}

func TestBearer(t *testing.T) {
	for h, want := range map[string]string{
		"Bearer bh_x": "bh_x", "bearer  bh_x": "bh_x", "BEARER bh_x": "bh_x",
		"Basic bh_x": "", "Bearer": "", "Bearer ": "", "Bearer a b": "", "Bearer a\tb": "",
	} {
		got, ok := credentials.Bearer(h)
		if ok != (want != "") || got != want && ok {
			t.Errorf("Bearer(%q) = %q, %v; want %q", h, got, ok, want)
		}
	}
}

func TestRenewalsBound(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	old := now.Add(-credentials.RenewWindow)
	times := []time.Time{old, now.Add(-9 * time.Minute), now.Add(-2 * time.Minute)}
	recent, wait := credentials.Renewals(times, now)
	if len(recent) != 2 || wait != 0 {
		t.Fatalf("two renewals within the window: %d kept, wait %s; want 2 and none", len(recent), wait)
	}
	recent, wait = credentials.Renewals(append(recent, now), now)
	if len(recent) != credentials.RenewBurst || wait != time.Minute {
		t.Fatalf("a burst within the window: %d kept, wait %s; want %d and 1m", len(recent), wait, credentials.RenewBurst)
	}
}

func TestJoinTokenUsable(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	j := credentials.Join{Host: "node-1", Expires: now.Add(time.Hour)}
	if err := j.Usable(now); err != nil {
		t.Fatalf("an unused join token within its time: %v", err)
	}
	if err := j.Usable(now.Add(2 * time.Hour)); !errors.Is(err, fault.Forbidden) || !strings.Contains(err.Error(), "expired at") {
		t.Errorf("an expired join token: %v", err)
	}
	j.Used = &now
	if err := j.Usable(now); !errors.Is(err, fault.Forbidden) || !strings.Contains(err.Error(), "already used") {
		t.Errorf("a used join token: %v", err)
	}
}

func TestDescendants(t *testing.T) {
	certs := []*credentials.Cert{
		{Serial: "a"}, {Serial: "b", RenewedFrom: "a"}, {Serial: "c", RenewedFrom: "b"},
		{Serial: "d", RenewedFrom: "a"}, {Serial: "e"}, {Serial: "f", RenewedFrom: "e"},
	}
	got := credentials.Descendants("a", certs)
	sort.Strings(got)
	if strings.Join(got, ",") != "a,b,c,d" {
		t.Errorf("Descendants(a) = %v, want a, b, c, d", got)
	}
	if got := credentials.Descendants("c", certs); len(got) != 1 {
		t.Errorf("Descendants(c) = %v, want c alone", got)
	}
}
