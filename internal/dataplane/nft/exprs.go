package nft

import (
	"encoding/binary"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// Small builders for the expressions the ruleset uses. Each returns a
// slice so that rules read as a concatenation.

func meta(key expr.MetaKey, r uint32) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: r}}
}

func payload(base expr.PayloadBase, off, n, r uint32) []expr.Any {
	return []expr.Any{&expr.Payload{DestRegister: r, Base: base, Offset: off, Len: n}}
}

func cmp(op expr.CmpOp, r uint32, data []byte) []expr.Any {
	return []expr.Any{&expr.Cmp{Op: op, Register: r, Data: data}}
}

func lookupMap(set string, sreg, dreg uint32) []expr.Any {
	return []expr.Any{&expr.Lookup{SourceRegister: sreg, DestRegister: dreg, IsDestRegSet: true, SetName: set}}
}

func member(set string, sreg uint32, invert bool) []expr.Any {
	return []expr.Any{&expr.Lookup{SourceRegister: sreg, SetName: set, Invert: invert}}
}

func imm(r uint32, data []byte) []expr.Any {
	return []expr.Any{&expr.Immediate{Register: r, Data: data}}
}

func verdict(kind expr.VerdictKind, chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: kind, Chain: chain}}
}

func counterRef(name string) []expr.Any {
	return []expr.Any{&expr.Objref{Type: 1 /* NFT_OBJECT_COUNTER */, Name: name}}
}

// nflog sends the packet to NFLOG group g with prefix p, at most rate
// records per second (with a burst of as many) from this rule. A limited
// record does not stop the rule's chain: the log sits in its own rule.
func nflog(g uint16, p string, rate uint32) []expr.Any {
	var out []expr.Any
	if rate > 0 {
		out = append(out, &expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(rate), Unit: expr.LimitTimeSecond, Burst: rate})
	}
	return append(out, &expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: g, Data: []byte(p)})
}

// ctState matches when the conntrack state has any of the bits.
func ctState(bits uint32) []expr.Any {
	r := reg(0)
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: r},
		&expr.Bitwise{SourceRegister: r, DestRegister: r, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: r, Data: make([]byte, 4)},
	}
}

// The conntrack state bits (NF_CT_STATE_BIT).
const (
	ctInvalid     = 1 << 0
	ctEstablished = 1 << 1
	ctRelated     = 1 << 2
)

// markTest matches when the packet mark has the bit.
func markTest(bit uint32) []expr.Any {
	r := reg(0)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: r},
		&expr.Bitwise{SourceRegister: r, DestRegister: r, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bit), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: r, Data: make([]byte, 4)},
	}
}

// markSet sets (on) or clears the bit of the packet mark.
func markSet(bit uint32, on bool) []expr.Any {
	r := reg(0)
	xor := uint32(0)
	if on {
		xor = bit
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: r},
		&expr.Bitwise{SourceRegister: r, DestRegister: r, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^bit), Xor: binaryutil.NativeEndian.PutUint32(xor)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: r},
	}
}

func nfproto(f int) []expr.Any {
	p := byte(unix.NFPROTO_IPV4)
	if f == 6 {
		p = unix.NFPROTO_IPV6
	}
	return append(meta(expr.MetaKeyNFPROTO, reg(0)), cmp(expr.CmpOpEq, reg(0), []byte{p})...)
}

func l4proto(p byte) []expr.Any {
	return append(meta(expr.MetaKeyL4PROTO, reg(0)), cmp(expr.CmpOpEq, reg(0), []byte{p})...)
}

// addr loads the source or destination address of family f into r (four
// registers for IPv6).
func addr(f int, src bool, r uint32) []expr.Any {
	switch {
	case f == 4 && src:
		return payload(expr.PayloadBaseNetworkHeader, 12, 4, r)
	case f == 4:
		return payload(expr.PayloadBaseNetworkHeader, 16, 4, r)
	case src:
		return payload(expr.PayloadBaseNetworkHeader, 8, 16, r)
	}
	return payload(expr.PayloadBaseNetworkHeader, 24, 16, r)
}

// port loads the packet's "port" for the port kind into r: the destination
// port, ICMP type<<8|code, or 0.
func port(kind string, r uint32) []expr.Any {
	switch kind {
	case portTH:
		return payload(expr.PayloadBaseTransportHeader, 2, 2, r)
	case portICMP:
		return payload(expr.PayloadBaseTransportHeader, 0, 2, r)
	}
	return imm(r, make([]byte, 4))
}

// reject refuses the packet: a TCP reset for TCP (first rule), ICMP or
// ICMPv6 administratively prohibited for the rest (second rule).
func rejectRules() [][]expr.Any {
	return [][]expr.Any{
		append(l4proto(unix.IPPROTO_TCP), &expr.Reject{Type: unix.NFT_REJECT_TCP_RST}),
		{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_ADMIN_PROHIBITED}},
	}
}

// queueExpr hands the packet to NFQUEUE num without bypass: with no
// listener the kernel drops it (fail closed). native uses the nft queue
// statement; otherwise the xtables NFQUEUE target through nft_compat.
func queueExpr(num uint16, native bool) expr.Any {
	if native {
		return &expr.Queue{Num: num}
	}
	info := make([]byte, 8) // struct xt_NFQ_info_v3: queuenum, queues_total, flags, pad
	binary.NativeEndian.PutUint16(info[0:], num)
	binary.NativeEndian.PutUint16(info[2:], 1)
	u := xt.Unknown(info)
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &u}
}
