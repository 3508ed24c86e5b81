package nft

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/logprefix"
	"net/netip"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// TableName is the one table Bulkhead owns, in the inet family.
const TableName = "bulkhead"

// Tag marks the rules of the base chains (as their comment): a table named
// TableName whose base-chain rules carry it was made by Bulkhead.
const Tag = "bulkhead"

// The base chains. They keep their hooks for the table's whole life; their
// rules are rewritten, in one transaction, when a generation takes over.
const (
	chainForward = "forward"
	chainInput   = "input"
	chainOutput  = "output"
)

func isBaseChain(name string) bool {
	return name == chainForward || name == chainInput || name == chainOutput
}

// Named counters, outside any generation so that they survive a
// generation change (and an agent restart).
const (
	counterSpoofed = "spoofed"
	counterNoEntry = "no_entry"
	counterEscal   = "escalated"
)

func wallCounterName(w string) string { return "wall_" + shortHash(w) }

// setRuleCounters counts, per rule, the connections the rule decided: a
// set with a counter on every element, keyed by ruleKey. A lookup that
// finds an element counts into it. It belongs to no generation, so that
// the counts survive a generation change and an agent restart. (Before
// the carrier layout its keys were 8 bytes, in a set named
// "rule_counters": an agent adopting such a table sweeps it with the old
// generation, and the counts start again from zero once.)
const setRuleCounters = "rule_counts"

// ruleKey is a rule's home counter key: 31 bits of a hash of its id,
// with the top bit set. Two ids with one home key get two keys: the
// model probes to the next free one (probeKey, model.keyFor), and the
// counter element's comment names its rule, so that the assignment
// survives a restart. The key travels in the conntrack
// mark (see "Carriers" in docs/dataplane.md), where a group word never has
// that bit: a rule key can never be mistaken for one. The empty id (no
// rule decided) has the key 0x80000000.
func ruleKey(id string) []byte {
	if id == "" {
		return u32(ruleKeyBit)
	}
	sum := sha256.Sum256([]byte(id))
	return u32(binary.BigEndian.Uint32(sum[:4]) | ruleKeyBit)
}

const ruleKeyBit = 1 << 31

// probeKey is the n-th key a rule id may take: its home key (ruleKey) for
// n = 0, then the next ones in order, never the empty id's.
func probeKey(id string, n uint32) []byte {
	if id == "" {
		return u32(ruleKeyBit)
	}
	sum := sha256.Sum256([]byte(id))
	v := binary.BigEndian.Uint32(sum[:4])
	for i := uint32(0); ; i++ {
		k := (v + n + i) &^ ruleKeyBit
		if k != 0 {
			return u32(k | ruleKeyBit)
		}
	}
}

// ownerTag names a rule in the comment of its counter element: the id,
// or "#" and RuleTag(id) for an id too long for a comment.
func ownerTag(id string) string {
	if len(id) <= 120 {
		return id
	}
	return "#" + RuleTag(id)
}

// isPersistent reports the names that no generation owns.
func isPersistent(name string) bool { return isBaseChain(name) || name == setRuleCounters }

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// genName suffixes a chain or set name with its generation.
func genName(base string, gen int) string { return base + "_g" + strconv.Itoa(gen) }

// genOf returns the generation of a name made by genName, or -1.
func genOf(name string) int {
	i := strings.LastIndex(name, "_g")
	if i < 0 {
		return -1
	}
	n, err := strconv.Atoi(name[i+2:])
	if err != nil || n <= 0 {
		return -1
	}
	return n
}

// Registers. The kernel has 16 32-bit data registers (NFT_REG32_00..15);
// values never survive from one rule to the next. reg(i) is the i-th
// 32-bit register. Within a rule, no lookup is ever keyed by what another
// lookup wrote into a register: nft 1.0.6 (Debian 12) aborts when it lists
// such a rule (netlink_delinearize.c:126, "consumed > 0"). A lookup's
// result goes into a carrier instead (carriers.go), and the next lookup
// loads its key from there.
func reg(i int) uint32 { return uint32(unix.NFT_REG32_00 + i) }

// The verdict-table key is two words: the peer's class word (class, and
// the level in the bits above it; classWord) and the local side's group
// word (group << 8 | bucket; groupWord).
const (
	classBits = 28
	maxClass  = 1<<classBits - 1
	maxGroup  = 1<<23 - 1 // so that a group word never has ruleKeyBit
)

func classWord(c compile.ClassID, level int) uint32 { return uint32(level)<<classBits | uint32(c) }
func groupWord(g compile.GroupID) uint32            { return uint32(g) << 8 }

// Identity attributes, one map each (a carrier holds 32 bits): the guard,
// then the peer class words by direction and level.
const numAttrs = 1 + 2*compile.NumLevels

// attrValues returns an identity's attribute words in the order of
// attrSet's index.
func attrValues(a compile.IdentityAttrs) [numAttrs]uint32 {
	v := [numAttrs]uint32{uint32(a.Guard)}
	for d := range a.Class {
		for l := range a.Class[d] {
			v[1+d*compile.NumLevels+l] = classWord(a.Class[d][l], l)
		}
	}
	return v
}

// attrSet names the map of attribute i: "guard", "cls_i0" ... "cls_e2".
func attrSet(i int) string {
	if i == 0 {
		return setGuard
	}
	d := policy.Direction((i - 1) / compile.NumLevels)
	return "cls_" + dirName(d) + strconv.Itoa((i-1)%compile.NumLevels)
}

func classSet(d policy.Direction, level int) string {
	return attrSet(1 + int(d)*compile.NumLevels + level)
}

// wildcardLevel is compile's level for a group's wildcard entry.
const wildcardLevel = compile.NumLevels

// Set names (without the generation suffix).
const (
	setIfaces   = "ifaces"   // workload interfaces
	setOwn4     = "own4"     // iifname . ip saddr a workload may send from
	setOwn6     = "own6"     //
	setAddr4    = "addr4"    // workload address → identity
	setAddr6    = "addr6"    //
	setRange4   = "range4"   // every other address (intervals) → identity
	setRange6   = "range6"   //
	setRange4b  = "range4b"  // the same, the other of two slots (see model.rangeElems)
	setRange6b  = "range6b"  //
	setGuard    = "guard"    // identity → guard (and cls_*: identity → class word, see attrSet)
	setGroupI   = "group_i"  // local identity → ingress policy group
	setGroupE   = "group_e"  // local identity → egress policy group
	setBuckets  = "buckets"  // IP protocol → jump to the bucket's chain (bucketChain)
	setTabI     = "tab_i"    // class word . group word → port map
	setTabE     = "tab_e"    //
	setPorts    = "ports"    // port map . port interval → outcome
	setOutcomes = "outcomes" // outcome → outcome word (see wordAllow)
	setVerdicts = "verdicts" // outcome word → verdict
	setOutRule  = "out_rule" // outcome → rule key (see setRuleCounters)
	setGuards   = "guards"   // source guard . destination guard → verdict
)

func groupSet(d policy.Direction) string {
	if d == policy.Egress {
		return setGroupE
	}
	return setGroupI
}

func tabSet(d policy.Direction) string {
	if d == policy.Egress {
		return setTabE
	}
	return setTabI
}

func dirName(d policy.Direction) string {
	if d == policy.Egress {
		return "e"
	}
	return "i"
}

var (
	typeU32     = nftables.TypeInteger
	typeIfName  = nftables.TypeIFName
	typeRuleKey = nftables.TypeInteger
)

// setSpec describes one set of a generation.
type setSpec struct {
	name     string
	key      nftables.SetDatatype
	data     nftables.SetDatatype // zero: a plain set
	verdict  bool
	interval bool
	concat   bool
}

func allSetSpecs() []setSpec {
	ifAddr4 := nftables.MustConcatSetType(typeIfName, nftables.TypeIPAddr)
	ifAddr6 := nftables.MustConcatSetType(typeIfName, nftables.TypeIP6Addr)
	// A concatenation's parts must have a fixed length for nft to list
	// the elements (nft 1.0.6 aborts on an "integer" part: mergesort.c:24,
	// "ilen > 0"); mark is a 32-bit integer type.
	word := nftables.TypeMark
	tabKey := nftables.MustConcatSetType(word, word)
	portKey := nftables.MustConcatSetType(word, nftables.TypeInetService)
	guardKey := nftables.MustConcatSetType(word, word)
	attrs := make([]setSpec, numAttrs)
	for i := range attrs {
		attrs[i] = setSpec{name: attrSet(i), key: typeU32, data: typeU32}
	}
	return append([]setSpec{
		{name: setIfaces, key: typeIfName},
		{name: setOwn4, key: ifAddr4, concat: true},
		{name: setOwn6, key: ifAddr6, concat: true},
		{name: setAddr4, key: nftables.TypeIPAddr, data: typeU32},
		{name: setAddr6, key: nftables.TypeIP6Addr, data: typeU32},
		{name: setRange4, key: nftables.TypeIPAddr, data: typeU32, interval: true},
		{name: setRange6, key: nftables.TypeIP6Addr, data: typeU32, interval: true},
		{name: setRange4b, key: nftables.TypeIPAddr, data: typeU32, interval: true},
		{name: setRange6b, key: nftables.TypeIP6Addr, data: typeU32, interval: true},
		{name: setGroupI, key: typeU32, data: typeU32},
		{name: setGroupE, key: typeU32, data: typeU32},
		{name: setBuckets, key: nftables.TypeInetProto, verdict: true},
		{name: setTabI, key: tabKey, data: typeU32, concat: true},
		{name: setTabE, key: tabKey, data: typeU32, concat: true},
		{name: setPorts, key: portKey, data: typeU32, interval: true, concat: true},
		{name: setOutcomes, key: typeU32, data: typeU32},
		{name: setVerdicts, key: typeU32, verdict: true},
		{name: setOutRule, key: typeU32, data: typeRuleKey},
		{name: setGuards, key: guardKey, verdict: true, concat: true},
	}, attrs...)
}

// Chain names (without the generation suffix).
const (
	chainFromWLFwd = "from_wl_fwd" // forward, from a workload interface
	chainToWLFwd   = "to_wl_fwd"   // forward, to a workload interface
	chainFromWLIn  = "from_wl_in"  // input, from a workload interface
	chainToWLOut   = "to_wl_out"   // output, to a workload interface
	chainSpoofed   = "spoofed"
	chainDecide    = "decide"
	chainEscalate  = "escalate"
	chainNoEntry   = "no_entry"
	chainReject    = "reject"   // an outcome that rejects and logs nothing
	chainEscMark   = "esc_mark" // an outcome that escalates and logs nothing
)

// outcomeChain is the chain of an outcome that logs.
func outcomeChain(id compile.OutcomeID) string { return "out" + strconv.Itoa(int(id)) }
func wallChain(i int) string                   { return "wall" + strconv.Itoa(i) }
func bucketChain(b uint8) string               { return "bk" + strconv.Itoa(int(b)) }
func conflictChain(i int) string               { return "conflict" + strconv.Itoa(i) }

// Address kinds of a packet's endpoint: a workload address (exact map) or
// any other (ranges).
const (
	kindExact = "x"
	kindRange = "r"
)

// Port kinds: where a protocol's "port" comes from.
const (
	portTH    = "th"    // tcp, udp, sctp: destination port
	portICMP  = "icmp"  // icmp, icmpv6: type<<8 | code
	portOther = "other" // every other protocol: 0

	// sideGrouped names a side's chain entered once the local side's
	// group is known (sideChain with it as the port kind).
	sideGrouped = "grp"
)

var portKinds = []string{portTH, portICMP, portOther}

// decisionChain names the decision chain of family f (4 or 6) for the
// source and destination address kinds ("" for the family's entry).
func decisionChain(f int, src, dst string) string {
	return "d" + strconv.Itoa(f) + src + dst
}

// sideChain names a side's chain: direction, family, peer kind and port
// kind ("" for the dispatch by port kind).
func sideChain(d policy.Direction, f int, peer, port string) string {
	n := "s" + dirName(d) + strconv.Itoa(f) + peer
	if port != "" {
		n += "_" + port
	}
	return n
}

// Key and data encodings. Numbers are big-endian, so that the readable
// dump and nft agree; the port is big-endian because it is compared as an
// interval with the packet's bytes.

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func addrKey(a netip.Addr) []byte {
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return b[:]
	}
	b := a.As16()
	return b[:]
}

func ownKey(iface string, a netip.Addr) []byte { return append(ifname(iface), addrKey(a)...) }

func tabKey(k compile.TableKey) []byte {
	return binary.BigEndian.AppendUint32(u32(classWord(k.Class, int(k.Level))), groupWord(k.Group)|uint32(k.Bucket))
}

func portKey(pm uint32, port uint16) []byte {
	b := u32(pm)
	return append(b, byte(port>>8), byte(port), 0, 0)
}

func guardKey(k [2]compile.GuardID) []byte {
	return binary.BigEndian.AppendUint32(u32(uint32(k[0])), uint32(k[1]))
}

// logPrefixMax is the kernel's limit on a log prefix (logprefix.Format
// keeps to it).
const logPrefixMax = 127

// The kinds of log record (the format is internal/dataplane/logprefix's,
// shared with the readers of the records).
const (
	LogAllow     = logprefix.Allow
	LogDeny      = logprefix.Deny
	LogReject    = logprefix.Reject
	LogEscalate  = logprefix.Escalate
	LogWouldDeny = logprefix.WouldDeny
	LogWall      = logprefix.Wall
	LogSpoofed   = logprefix.Spoofed
	LogNoEntry   = logprefix.NoEntry
)

// LogPrefix returns the NFLOG prefix of a record of kind about id (a rule
// id or a wall name).
func LogPrefix(kind, id string) string { return logprefix.Format(kind, id) }

// RuleTag is the short form of an id too long for a log prefix.
func RuleTag(id string) string { return logprefix.Tag(id) }

// ParseLogPrefix splits a prefix made by LogPrefix. A long id comes back
// as "#" and its RuleTag.
func ParseLogPrefix(p string) (kind, id string, ok bool) { return logprefix.Parse(p) }

func actionLogKind(a policy.Action) string {
	switch a {
	case policy.Allow:
		return LogAllow
	case policy.Reject:
		return LogReject
	case policy.Escalate:
		return LogEscalate
	}
	return LogDeny
}

func errorf(format string, args ...any) error { return fmt.Errorf("nft: "+format, args...) }
