package flows

import (
	"encoding/binary"
	"net/netip"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane/logprefix"
)

// parseHit reads a dataplane log prefix ("bh deny Policy/app/x/ingress/y",
// "bh spoofed") into its kind and id.
func parseHit(prefix string) (Hit, bool) {
	kind, id, ok := logprefix.Parse(prefix)
	if !ok {
		return Hit{}, false
	}
	switch v := Verdict(kind); v {
	case Allow, Deny, Reject, Escalate, WouldDeny, Wall, Spoofed, NoEntry:
		return Hit{Kind: v, ID: id}, true
	}
	return Hit{}, false
}

// dropped reports whether a log record of this kind is about a packet the
// kernel dropped (no conntrack entry will follow), rather than one it let
// through or queued.
func (h Hit) dropped() bool {
	switch h.Kind {
	case Allow, Escalate, WouldDeny:
		return false
	}
	return true
}

// key is a connection's 5-tuple in its original direction.
type key struct {
	src, dst     netip.Addr
	proto        uint8
	sport, dport uint16
}

// parsePacket reads the 5-tuple and the IP length of an IPv4 or IPv6
// packet (IPv6 without extension headers). ICMP carries type<<8|code as
// its destination port, as the dataplane's port maps do.
func parsePacket(p []byte) (key, uint64, bool) {
	var k key
	if len(p) < 1 {
		return k, 0, false
	}
	var l4 []byte
	var length uint64
	switch p[0] >> 4 {
	case 4:
		ihl := int(p[0]&0x0f) * 4
		if ihl < 20 || len(p) < ihl {
			return k, 0, false
		}
		k.src, k.dst = netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
		k.proto, l4 = p[9], p[ihl:]
		length = uint64(binary.BigEndian.Uint16(p[2:4]))
	case 6:
		if len(p) < 40 {
			return k, 0, false
		}
		k.src, k.dst = netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
		k.proto, l4 = p[6], p[40:]
		length = 40 + uint64(binary.BigEndian.Uint16(p[4:6]))
	default:
		return k, 0, false
	}
	switch k.proto {
	case 6, 17, 132:
		if len(l4) >= 4 {
			k.sport, k.dport = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
		}
	case 1, 58:
		if len(l4) >= 2 {
			k.dport = uint16(l4[0])<<8 | uint16(l4[1])
		}
	}
	return k, length, true
}
