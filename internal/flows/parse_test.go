package flows

import (
	"net/netip"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
)

// Every prefix the dataplane writes reads back as its kind and id; other
// prefixes are not the dataplane's.
func TestParseHit(t *testing.T) {
	long := "Policy/app/" + string(make([]byte, 200))
	for _, c := range []struct {
		prefix string
		want   Hit
		ok     bool
	}{
		{"bh allow Policy/app/b-in/ingress/web", Hit{Allow, "Policy/app/b-in/ingress/web"}, true},
		{nft.LogPrefix(nft.LogDeny, "Policy/app/x/ingress/0"), Hit{Deny, "Policy/app/x/ingress/0"}, true},
		{nft.LogPrefix(nft.LogWouldDeny, "Policy/app/x/ingress/0"), Hit{WouldDeny, "Policy/app/x/ingress/0"}, true},
		{nft.LogPrefix(nft.LogWall, "buy-sell"), Hit{Wall, "buy-sell"}, true},
		{nft.LogPrefix(nft.LogSpoofed, ""), Hit{Spoofed, ""}, true},
		{"bh no-entry\x00", Hit{NoEntry, ""}, true},
		{nft.LogPrefix(nft.LogReject, long), Hit{Reject, "#" + nft.RuleTag(long)}, true},
		{"bh frobnicate x", Hit{}, false},
		{"ulogd something", Hit{}, false},
	} {
		got, ok := parseHit(c.prefix)
		if ok != c.ok || got != c.want {
			t.Errorf("parseHit(%q) = %+v, %v; want %+v, %v", c.prefix, got, ok, c.want, c.ok)
		}
	}
}

func TestParsePacket(t *testing.T) {
	syn := []byte{0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 1, 0, 1, 10, 2, 0, 2,
		0xc3, 0x50, 0x1f, 0x90}
	k, n, ok := parsePacket(syn)
	want := key{netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.2.0.2"), 6, 50000, 8080}
	if !ok || k != want || n != 60 {
		t.Fatalf("parsePacket = %+v, %d, %v; want %+v, 60", k, n, ok, want)
	}
	if _, _, ok := parsePacket([]byte{0x45, 0}); ok {
		t.Fatal("a truncated packet parsed")
	}
}
