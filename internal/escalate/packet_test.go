package escalate

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// ip4 builds an IPv4 header (no options unless ihl > 5) followed by l4.
func ip4(proto uint8, src, dst string, ihl int, l4 []byte) []byte {
	h := make([]byte, ihl*4)
	h[0] = 0x40 | byte(ihl)
	binary.BigEndian.PutUint16(h[2:], uint16(len(h)+len(l4)))
	h[8], h[9] = 64, proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	return append(h, l4...)
}

// ip6 builds an IPv6 header whose next header is next, followed by rest.
func ip6(next uint8, src, dst string, rest []byte) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(rest)))
	h[6], h[7] = next, 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, rest...)
}

func ports(sport, dport uint16, tail int) []byte {
	b := make([]byte, 4+tail)
	binary.BigEndian.PutUint16(b, sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	return b
}

func icmpEcho(typ uint8, id uint16) []byte {
	b := make([]byte, 8)
	b[0] = typ
	binary.BigEndian.PutUint16(b[4:], id)
	return b
}

// Every family and protocol the dataplane may escalate reads as its
// 5-tuple; what cannot be read is an error, never a guess.
func TestParse(t *testing.T) {
	a4, b4 := netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.1.0.2")
	a6, b6 := netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")
	hopByHop := append([]byte{protoTCP, 0, 0, 0, 0, 0, 0, 0}, ports(4000, 443, 16)...) // 8-byte extension header
	fragment := append([]byte{protoUDP, 0, 0, 0, 0, 0, 0, 1}, ports(53, 5353, 4)...)
	cases := []struct {
		name string
		pkt  []byte
		want Conn
	}{
		{"tcp4", ip4(protoTCP, "10.1.0.1", "10.1.0.2", 5, ports(40000, 8080, 16)), Conn{Proto: protoTCP, Src: a4, Dst: b4, SrcPort: 40000, DstPort: 8080}},
		{"tcp4 options", ip4(protoTCP, "10.1.0.1", "10.1.0.2", 7, ports(1, 2, 16)), Conn{Proto: protoTCP, Src: a4, Dst: b4, SrcPort: 1, DstPort: 2}},
		{"udp4", ip4(protoUDP, "10.1.0.1", "10.1.0.2", 5, ports(5000, 53, 4)), Conn{Proto: protoUDP, Src: a4, Dst: b4, SrcPort: 5000, DstPort: 53}},
		{"icmp4 echo", ip4(protoICMP, "10.1.0.1", "10.1.0.2", 5, icmpEcho(8, 77)), Conn{Proto: protoICMP, Src: a4, Dst: b4, ICMPType: 8, SrcPort: 77}},
		{"icmp4 other", ip4(protoICMP, "10.1.0.1", "10.1.0.2", 5, []byte{13, 0, 0, 0, 0, 9, 0, 0}), Conn{Proto: protoICMP, Src: a4, Dst: b4, ICMPType: 13}},
		{"gre4", ip4(47, "10.1.0.1", "10.1.0.2", 5, []byte{0, 0, 0, 0}), Conn{Proto: 47, Src: a4, Dst: b4}},
		{"tcp6", ip6(protoTCP, "fd00::1", "fd00::2", ports(40000, 8080, 16)), Conn{Proto: protoTCP, Src: a6, Dst: b6, SrcPort: 40000, DstPort: 8080}},
		{"tcp6 hop-by-hop", ip6(0, "fd00::1", "fd00::2", hopByHop), Conn{Proto: protoTCP, Src: a6, Dst: b6, SrcPort: 4000, DstPort: 443}},
		{"udp6 first fragment", ip6(44, "fd00::1", "fd00::2", fragment), Conn{Proto: protoUDP, Src: a6, Dst: b6, SrcPort: 53, DstPort: 5353}},
		{"icmp6 echo", ip6(protoICMPv6, "fd00::1", "fd00::2", icmpEcho(128, 5)), Conn{Proto: protoICMPv6, Src: a6, Dst: b6, ICMPType: 128, SrcPort: 5}},
	}
	for _, c := range cases {
		got, err := parse(c.pkt)
		if err != nil || got != c.want {
			t.Errorf("%s: parse = %+v, %v; want %+v", c.name, got, err, c.want)
		}
	}

	later := []byte{protoUDP, 0, 0, 8 << 3, 0, 0, 0, 1} // fragment offset 8: no ports here
	bad := map[string][]byte{
		"empty":           nil,
		"version 5":       {0x50, 0, 0, 0},
		"short ipv4":      ip4(protoTCP, "10.1.0.1", "10.1.0.2", 5, nil)[:12],
		"ihl too small":   func() []byte { p := ip4(protoTCP, "10.1.0.1", "10.1.0.2", 5, ports(1, 2, 16)); p[0] = 0x44; return p }(),
		"tcp truncated":   ip4(protoTCP, "10.1.0.1", "10.1.0.2", 5, []byte{1, 2}),
		"ipv4 fragment":   func() []byte { p := ip4(protoUDP, "10.1.0.1", "10.1.0.2", 5, ports(1, 2, 4)); p[7] = 1; return p }(),
		"ipv6 short":      ip6(protoTCP, "fd00::1", "fd00::2", nil)[:30],
		"ipv6 fragment 2": ip6(44, "fd00::1", "fd00::2", append(later, ports(1, 2, 4)...)),
		"ipv6 ext loop":   ip6(0, "fd00::1", "fd00::2", []byte{0, 0, 0, 0, 0, 0}),
	}
	for name, p := range bad {
		if c, err := parse(p); err == nil {
			t.Errorf("%s: parse = %+v, want an error", name, c)
		}
	}
}
