package nft

import (
	"github.com/google/nftables/expr"
)

// Carriers. nft 1.0.6, the CLI of Debian 12, aborts when it lists a rule
// with a lookup keyed by what another lookup of the same rule wrote into
// a register (netlink_delinearize.c:126, "consumed > 0"), and has no
// syntax for one: `nft list ruleset`, even `nft list tables`, then fails
// on the whole host. Every chain of lookups (address → identity →
// class → port map → outcome → rule) therefore passes each result through
// a field of the packet that a later expression loads again, which nft
// prints as `meta priority set ip saddr map @m`, then
// `meta priority . ct mark map @n`:
//
//   - P, the packet's priority (skb->priority), and
//   - C, the conntrack mark of the new connection.
//
// Only the first packet of a connection from or to a workload walks the
// decision chains (established traffic is accepted first), and the
// decision chain resets both to 0 before it accepts or queues the packet
// (carriersReset): a conntrack mark written on a new packet stays on the
// connection. The packet mark is not a carrier: others use its bits (see
// "Packet mark" in docs/dataplane.md), and it holds the escalation bit.

// The carrier a value goes through.
type carrier int

const (
	carrierP carrier = iota // meta priority
	carrierC                // ct mark
)

// load loads the carrier into r.
func (c carrier) load(r uint32) []expr.Any {
	if c == carrierC {
		return []expr.Any{&expr.Ct{Key: expr.CtKeyMARK, Register: r}}
	}
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyPRIORITY, Register: r}}
}

// store sets the carrier from r.
func (c carrier) store(r uint32) []expr.Any {
	if c == carrierC {
		return []expr.Any{&expr.Ct{Key: expr.CtKeyMARK, Register: r, SourceRegister: true}}
	}
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyPRIORITY, Register: r, SourceRegister: true}}
}

// mapInto looks key (expressions that leave it in registers from reg(0)
// on) up in the map set and stores the value in c: `c set key map @set`.
// The rule stops when the key is missing, and c keeps what it held.
func mapInto(c carrier, set string, key ...[]expr.Any) []expr.Any {
	return cat(cat(key...), lookupMap(set, reg(0), reg(0)), c.store(reg(0)))
}

// carriersReset gives both carriers back the value 0.
func carriersReset() []expr.Any {
	return cat(imm(reg(0), u32(0)), carrierP.store(reg(0)), carrierC.store(reg(0)))
}

// orLowByte sets the low byte of carrier C's group word (whose low byte
// is 0) to b: `ct mark set ct mark & 0xffffff00 | b` in the bytes the
// maps hold (big-endian).
func orLowByte(b uint8) []expr.Any {
	return cat(carrierC.load(reg(0)),
		[]expr.Any{&expr.Bitwise{SourceRegister: reg(0), DestRegister: reg(0), Len: 4,
			Mask: []byte{0xff, 0xff, 0xff, 0}, Xor: []byte{0, 0, 0, b}}},
		carrierC.store(reg(0)))
}
