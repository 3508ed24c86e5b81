package escalate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// copyLen is how much of each packet the kernel copies to the Holder: the
// IPv6 header, a few extension headers and the transport header's first
// bytes are all it reads.
const copyLen = 256

var errShort = errors.New("packet too short")

// parse reads a queued packet's connection: the IP header (IPv4, or IPv6
// with its extension headers) and the transport header's ports, or an
// ICMP message's type, code and echo identifier. Conntrack has
// reassembled fragments before any rule sees them, so a later fragment is
// an error, not a guess.
func parse(p []byte) (Conn, error) {
	c, _, err := parseSeq(p)
	return c, err
}

// parseSeq is parse, with a TCP segment's sequence number (0 for other
// protocols): a retransmitted SYN repeats its connection's, a new
// connection on the same ports has another.
func parseSeq(p []byte) (Conn, uint32, error) {
	if len(p) < 1 {
		return Conn{}, 0, errShort
	}
	var c Conn
	var l4 []byte
	var err error
	switch p[0] >> 4 {
	case 4:
		c, l4, err = parse4(p)
	case 6:
		c, l4, err = parse6(p)
	default:
		return Conn{}, 0, fmt.Errorf("ip version %d", p[0]>>4)
	}
	if err == nil {
		c, err = transport(c, l4)
	}
	if err != nil {
		return Conn{}, 0, err
	}
	var seq uint32
	if c.Proto == protoTCP && len(l4) >= 8 {
		seq = binary.BigEndian.Uint32(l4[4:])
	}
	return c, seq, nil
}

func parse4(p []byte) (Conn, []byte, error) {
	if len(p) < 20 {
		return Conn{}, nil, errShort
	}
	ihl := int(p[0]&0x0f) * 4
	if ihl < 20 || len(p) < ihl {
		return Conn{}, nil, fmt.Errorf("ipv4 header length %d of %d bytes", ihl, len(p))
	}
	if binary.BigEndian.Uint16(p[6:])&0x1fff != 0 {
		return Conn{}, nil, errors.New("ipv4: not the first fragment")
	}
	c := Conn{Proto: p[9], Src: netip.AddrFrom4([4]byte(p[12:16])), Dst: netip.AddrFrom4([4]byte(p[16:20]))}
	return c, p[ihl:], nil
}

func parse6(p []byte) (Conn, []byte, error) {
	if len(p) < 40 {
		return Conn{}, nil, errShort
	}
	c := Conn{Src: netip.AddrFrom16([16]byte(p[8:24])), Dst: netip.AddrFrom16([16]byte(p[24:40]))}
	next, rest := p[6], p[40:]
	for range 8 { // a packet with more extension headers than this is not a connection's first packet
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(rest) < 8 {
				return Conn{}, nil, errShort
			}
			n := (int(rest[1]) + 1) * 8
			if len(rest) < n {
				return Conn{}, nil, errShort
			}
			next, rest = rest[0], rest[n:]
		case 44: // fragment
			if len(rest) < 8 {
				return Conn{}, nil, errShort
			}
			if binary.BigEndian.Uint16(rest[2:])>>3 != 0 {
				return Conn{}, nil, errors.New("ipv6: not the first fragment")
			}
			next, rest = rest[0], rest[8:]
		case 51: // authentication header
			if len(rest) < 8 {
				return Conn{}, nil, errShort
			}
			n := (int(rest[1]) + 2) * 4
			if len(rest) < n {
				return Conn{}, nil, errShort
			}
			next, rest = rest[0], rest[n:]
		default:
			c.Proto = next
			return c, rest, nil
		}
	}
	return Conn{}, nil, errors.New("ipv6: too many extension headers")
}

func transport(c Conn, l4 []byte) (Conn, error) {
	switch {
	case hasPorts(c.Proto):
		if len(l4) < 4 {
			return Conn{}, fmt.Errorf("%s header: %w", protoName(c.Proto), errShort)
		}
		c.SrcPort, c.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
	case c.Proto == protoICMP || c.Proto == protoICMPv6:
		if len(l4) < 8 {
			return Conn{}, fmt.Errorf("%s header: %w", protoName(c.Proto), errShort)
		}
		c.ICMPType, c.ICMPCode = l4[0], l4[1]
		if isEcho(c.Proto, c.ICMPType) {
			c.SrcPort = binary.BigEndian.Uint16(l4[4:])
		}
	}
	return c, nil
}

// isEcho reports an echo request or reply, whose identifier conntrack
// keeps as part of the connection.
func isEcho(proto, typ uint8) bool {
	if proto == protoICMP {
		return typ == 8 || typ == 0
	}
	return typ == 128 || typ == 129
}
