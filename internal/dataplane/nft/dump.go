package nft

import (
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Dump writes the live table in readable form: the chains with their
// rules, every map with its elements decoded (identities, classes,
// groups, port ranges, verdicts) and the counters; nft prints the same
// rules, but not what the numbers in the maps mean. It reads
// every element back: slow for big maps (seconds at 100,000), never on a
// hot path.
func (d *Dataplane) Dump(w io.Writer) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errorf("dump: dataplane closed")
	}
	var names map[string]string
	if d.model != nil {
		names = map[string]string{}
		for k, id := range d.model.ruleOf {
			names[fmt.Sprintf("%x", k)] = "rule " + id
		}
		for n, w := range d.model.wallOf {
			names[n] = "wall " + w
		}
	}
	return dump(d.conn, d.nsFd, w, names)
}

// DumpNS is Dump for the namespace at netnsPath ("" for the calling
// process's), without a Dataplane: for `bulkhead agent dump`.
func DumpNS(netnsPath string, w io.Writer) error {
	d, c, err := dialNS("dump", netnsPath)
	if err != nil {
		return err
	}
	defer d.closeNS()
	defer c.CloseLasting()
	return dump(c, d.nsFd, w, nil)
}

// dialNS opens a connection to the namespace at netnsPath ("" for the
// calling process's) for a one-off operation without a Dataplane. The
// caller closes both.
func dialNS(op, netnsPath string) (*Dataplane, *nftables.Conn, error) {
	d := &Dataplane{nsFd: -1, log: slog.New(slog.DiscardHandler)}
	if netnsPath != "" {
		fd, err := unix.Open(netnsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, nil, errorf("%s: open network namespace %s: %w", op, netnsPath, err)
		}
		d.nsFd = fd
	}
	c, err := d.dial()
	if err != nil {
		d.closeNS()
		return nil, nil, err
	}
	return d, c, nil
}

// dump writes the table; names annotates counters (name → what it counts).
func dump(c *nftables.Conn, nsFd int, w io.Writer, names map[string]string) error {
	f, err := readTable(c)
	if err != nil {
		return err
	}
	if !f.exists {
		_, err := fmt.Fprintf(w, "no table inet %s\n", TableName)
		return err
	}
	bw := &errWriter{w: w}
	bw.printf("table inet %s (generation %d)\n", TableName, f.maxGen)
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return errorf("dump: list chains: %w", err)
	}
	sort.SliceStable(chains, func(i, j int) bool {
		return chainRank(chains[i].Name) < chainRank(chains[j].Name)
	})
	for _, ch := range chains {
		if ch.Table.Name != TableName {
			continue
		}
		if err := dumpChain(c, bw, ch); err != nil {
			return err
		}
	}
	sort.Strings(f.sets)
	for _, s := range f.sets {
		els, err := readElements(nsFd, s)
		if err != nil {
			return err
		}
		dumpSet(bw, s, els, names)
	}
	objs, err := c.GetObjects(table())
	if err != nil {
		return errorf("dump: read counters: %w", err)
	}
	bw.printf("counters\n")
	for _, o := range objs {
		if co, ok := o.(*nftables.CounterObj); ok {
			note := ""
			if n := names[co.Name]; n != "" {
				note = " (" + n + ")"
			}
			bw.printf("\t%s%s: packets %d bytes %d\n", co.Name, note, co.Packets, co.Bytes)
		}
	}
	return bw.err
}

// chainRank orders chains as a packet meets them: base chains first.
func chainRank(name string) int {
	switch name {
	case chainForward:
		return 0
	case chainInput:
		return 1
	case chainOutput:
		return 2
	}
	return 3
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

func dumpChain(c *nftables.Conn, w *errWriter, ch *nftables.Chain) error {
	head := "chain " + ch.Name
	if ch.Hooknum != nil {
		hooks := map[nftables.ChainHook]string{*nftables.ChainHookForward: "forward",
			*nftables.ChainHookInput: "input", *nftables.ChainHookOutput: "output"}
		policy := "accept"
		if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
			policy = "drop"
		}
		head += fmt.Sprintf(" (hook %s, priority %d, policy %s)", hooks[*ch.Hooknum], *ch.Priority, policy)
	}
	w.printf("%s\n", head)
	rules, err := c.GetRules(table(), ch)
	if err != nil {
		return errorf("dump: rules of chain %s: %w", ch.Name, err)
	}
	for _, r := range rules {
		line := ruleString(r.Exprs)
		if s, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
			line += " # " + s
		}
		w.printf("\t%s\n", line)
	}
	return nil
}

// ruleString renders a rule's expressions in nft's style, following what
// each register holds so that concatenated lookups read as keys.
func ruleString(exprs []expr.Any) string {
	regs := map[uint32]string{} // register → what it holds
	width := map[uint32]int{}   // register → 32-bit words it spans
	set := func(r uint32, s string, words int) { regs[r], width[r] = s, max(words, 1) }
	var out []string
	for _, e := range exprs {
		normalize(e)
		switch e := e.(type) {
		case *expr.Meta:
			switch {
			case e.SourceRegister:
				out = append(out, "meta "+metaName(e.Key)+" set "+regs[e.Register])
			case e.Key == expr.MetaKeyIIFNAME || e.Key == expr.MetaKeyOIFNAME:
				set(e.Register, "meta "+metaName(e.Key), 4)
			default:
				set(e.Register, "meta "+metaName(e.Key), 1)
			}
		case *expr.Ct:
			switch {
			case e.SourceRegister:
				out = append(out, "ct "+ctName(e.Key)+" set "+regs[e.Register])
			case e.Register == unix.NFT_REG_VERDICT:
				// google/nftables v0.3.0 reads a ct statement's source
				// register back as no register at all (it decodes only
				// NFTA_CT_DREG); the rules set carrier C from reg(0) only.
				out = append(out, "ct "+ctName(e.Key)+" set "+regs[reg(0)])
			default:
				set(e.Register, "ct "+ctName(e.Key), 1)
			}
		case *expr.Payload:
			set(e.DestRegister, payloadName(e), int(e.Len+3)/4)
		case *expr.Bitwise:
			if regs[e.SourceRegister] == "ct state" {
				set(e.DestRegister, "ct state in {"+ctStateNames(binary.NativeEndian.Uint32(pad4(e.Mask)))+"}", 1)
				continue
			}
			set(e.DestRegister, bitwiseString(regs[e.SourceRegister], e), 1)
		case *expr.Cmp:
			if strings.HasPrefix(regs[e.Register], "ct state in") && e.Op == expr.CmpOpNeq {
				out = append(out, regs[e.Register])
				continue
			}
			out = append(out, fmt.Sprintf("%s %s %s", regs[e.Register], cmpOp(e.Op), hexBytes(e.Data)))
		case *expr.Range:
			out = append(out, fmt.Sprintf("%s %s-%s", regs[e.Register], hexBytes(e.FromData), hexBytes(e.ToData)))
		case *expr.Immediate:
			v := hexBytes(e.Data)
			if len(e.Data) == 4 && binary.BigEndian.Uint32(e.Data) == classWord(0, wildcardLevel) {
				v = "wildcard"
			}
			set(e.Register, v, (len(e.Data)+3)/4)
		case *expr.Lookup:
			if stmt := lookupString(e, regs, width, set); stmt != "" {
				out = append(out, stmt)
			}
		case *expr.Verdict:
			out = append(out, verdictString(e.Kind, e.Chain))
		case *expr.Objref:
			out = append(out, "counter name "+e.Name)
		case *expr.Limit:
			out = append(out, fmt.Sprintf("limit rate %d/second burst %d packets", e.Rate, e.Burst))
		case *expr.Log:
			out = append(out, fmt.Sprintf("log group %d prefix %q", e.Group, string(e.Data)))
		case *expr.Reject:
			if e.Type == unix.NFT_REJECT_TCP_RST {
				out = append(out, "reject with tcp reset")
			} else {
				out = append(out, "reject with icmpx admin-prohibited")
			}
		case *expr.Target:
			out = append(out, "xt target "+e.Name+" (queue, no bypass)")
		case *expr.Queue:
			out = append(out, fmt.Sprintf("queue num %d", e.Num))
		default:
			out = append(out, fmt.Sprintf("%T", e))
		}
	}
	return strings.Join(out, " ")
}

// lookupString renders a lookup: a statement, or "" when it only loads a
// register (which set records).
func lookupString(e *expr.Lookup, regs map[uint32]string, width map[uint32]int, set func(uint32, string, int)) string {
	key := concat(regs, width, e.SourceRegister, keyWords(e.SetName))
	switch {
	case e.IsDestRegSet && e.DestRegister == unix.NFT_REG_VERDICT:
		return key + " vmap @" + e.SetName
	case !e.IsDestRegSet && e.SetName == setRuleCounters:
		return "count @" + e.SetName + "[" + key + "]"
	case e.IsDestRegSet:
		set(e.DestRegister, "@"+e.SetName+"["+key+"]", dataWords(e.SetName))
		return ""
	case e.Invert:
		return key + " != @" + e.SetName
	}
	return key + " @" + e.SetName
}

// normalize turns the register numbers the kernel lists back into the
// 32-bit ones the rules were written with: the kernel lists a 32-bit
// register that starts a 16-byte one under the 16-byte name.
func normalize(e expr.Any) {
	fix := func(r *uint32) {
		if *r >= unix.NFT_REG_1 && *r <= unix.NFT_REG_4 {
			*r = unix.NFT_REG32_00 + 4*(*r-unix.NFT_REG_1)
		}
	}
	switch e := e.(type) {
	case *expr.Meta:
		fix(&e.Register)
	case *expr.Ct:
		fix(&e.Register)
	case *expr.Payload:
		fix(&e.DestRegister)
	case *expr.Bitwise:
		fix(&e.SourceRegister)
		fix(&e.DestRegister)
	case *expr.Cmp:
		fix(&e.Register)
	case *expr.Range:
		fix(&e.Register)
	case *expr.Immediate:
		if e.Register != unix.NFT_REG_VERDICT {
			fix(&e.Register)
		}
	case *expr.Lookup:
		fix(&e.SourceRegister)
		if e.DestRegister != unix.NFT_REG_VERDICT {
			fix(&e.DestRegister)
		}
	}
}

func concat(regs map[uint32]string, width map[uint32]int, r uint32, words int) string {
	if words <= 0 {
		return regs[r]
	}
	var parts []string
	for n := 0; n < words; {
		w := max(width[r], 1)
		parts = append(parts, regs[r])
		r += uint32(w)
		n += w
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "(" + strings.Join(parts, " . ") + ")"
}

func baseName(set string) string {
	if i := strings.LastIndex(set, "_g"); i > 0 && genOf(set) > 0 {
		return set[:i]
	}
	return set
}

func specOf(set string) (setSpec, bool) {
	for _, s := range allSetSpecs() {
		if s.name == baseName(set) {
			return s, true
		}
	}
	return setSpec{}, false
}

func keyWords(set string) int {
	s, ok := specOf(set)
	if !ok {
		return 0
	}
	return int(s.key.Bytes+3) / 4
}

func dataWords(set string) int {
	s, _ := specOf(set)
	return int(s.data.Bytes+3) / 4
}

func metaName(k expr.MetaKey) string {
	switch k {
	case expr.MetaKeyIIFNAME:
		return "iifname"
	case expr.MetaKeyOIFNAME:
		return "oifname"
	case expr.MetaKeyNFPROTO:
		return "nfproto"
	case expr.MetaKeyL4PROTO:
		return "l4proto"
	case expr.MetaKeyMARK:
		return "mark"
	case expr.MetaKeyPRIORITY:
		return "priority"
	}
	return fmt.Sprintf("key%d", k)
}

func ctName(k expr.CtKey) string {
	switch k {
	case expr.CtKeySTATE:
		return "state"
	case expr.CtKeyMARK:
		return "mark"
	}
	return fmt.Sprintf("key%d", k)
}

// bitwiseString renders (x & mask) ^ xor: on the packet mark in host
// order; on a carrier (whose words the maps hold big-endian) as the
// bucket chain's "| N" of the low byte.
func bitwiseString(x string, e *expr.Bitwise) string {
	if x == "ct mark" && len(e.Mask) == 4 && e.Mask[3] == 0 && binary.BigEndian.Uint32(e.Mask) == 0xffffff00 {
		return fmt.Sprintf("%s | %d", x, e.Xor[3])
	}
	b := fmt.Sprintf("%s & 0x%x", x, binary.NativeEndian.Uint32(pad4(e.Mask)))
	if v := binary.NativeEndian.Uint32(pad4(e.Xor)); v != 0 {
		b += fmt.Sprintf(" ^ 0x%x", v)
	}
	return b
}

func payloadName(p *expr.Payload) string {
	type k struct {
		base     expr.PayloadBase
		off, len uint32
	}
	names := map[k]string{
		{expr.PayloadBaseNetworkHeader, 12, 4}:  "ip saddr",
		{expr.PayloadBaseNetworkHeader, 16, 4}:  "ip daddr",
		{expr.PayloadBaseNetworkHeader, 8, 16}:  "ip6 saddr",
		{expr.PayloadBaseNetworkHeader, 24, 16}: "ip6 daddr",
		{expr.PayloadBaseNetworkHeader, 7, 1}:   "ip6 hoplimit",
		{expr.PayloadBaseTransportHeader, 2, 2}: "th dport",
		{expr.PayloadBaseTransportHeader, 0, 2}: "icmp type.code",
		{expr.PayloadBaseTransportHeader, 0, 1}: "icmpv6 type",
	}
	if n, ok := names[k{p.Base, p.Offset, p.Len}]; ok {
		return n
	}
	return fmt.Sprintf("@base%d,%d,%d", p.Base, p.Offset*8, p.Len*8)
}

func cmpOp(op expr.CmpOp) string {
	if op == expr.CmpOpNeq {
		return "!="
	}
	return "=="
}

func pad4(b []byte) []byte {
	out := make([]byte, 4)
	copy(out, b)
	return out
}

func hexBytes(b []byte) string {
	if len(b) == 1 {
		return fmt.Sprint(b[0])
	}
	if len(b) == 4 {
		return fmt.Sprint(binary.BigEndian.Uint32(b))
	}
	return fmt.Sprintf("0x%x", b)
}

func verdictString(k expr.VerdictKind, chain string) string {
	switch k {
	case expr.VerdictAccept:
		return "accept"
	case expr.VerdictDrop:
		return "drop"
	case expr.VerdictReturn:
		return "return"
	case expr.VerdictJump:
		return "jump " + chain
	case expr.VerdictGoto:
		return "goto " + chain
	}
	return fmt.Sprintf("verdict %d", k)
}

// element is one set element as the kernel lists it.
type element struct {
	key, keyEnd, data []byte
	verdict           string
	end               bool // the end of an interval (non-concatenated interval sets)
	packets, bytes    uint64
	counted           bool // has a counter
}

// readElements lists a set's elements with a netlink dump of its own:
// the library drops verdicts when it decodes elements.
func readElements(nsFd int, set string) ([]element, error) {
	cfg := &netlink.Config{}
	if nsFd >= 0 {
		cfg.NetNS = nsFd
	}
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, errorf("dump: netlink: %w", err)
	}
	defer c.Close()
	_ = c.SetReadBuffer(16 << 20)
	attrs, _ := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: []byte(TableName + "\x00")},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: []byte(set + "\x00")},
	})
	msg := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags: netlink.Request | netlink.Dump},
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
	replies, err := c.Execute(msg)
	if err != nil {
		return nil, errorf("dump: elements of set %s: %w", set, err)
	}
	var out []element
	for _, r := range replies {
		if len(r.Data) < 4 {
			continue
		}
		els, err := parseElements(r.Data[4:])
		if err != nil {
			return nil, errorf("dump: elements of set %s: %w", set, err)
		}
		out = append(out, els...)
	}
	return out, nil
}

func parseElements(b []byte) ([]element, error) {
	var out []element
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return nil, err
	}
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		ad.Nested(func(list *netlink.AttributeDecoder) error {
			for list.Next() {
				var e element
				list.Nested(func(a *netlink.AttributeDecoder) error {
					a.ByteOrder = binary.BigEndian
					for a.Next() {
						switch a.Type() {
						case unix.NFTA_SET_ELEM_KEY:
							a.Nested(func(v *netlink.AttributeDecoder) error { e.key = dataValue(v); return nil })
						case nftables.NFTA_SET_ELEM_KEY_END:
							a.Nested(func(v *netlink.AttributeDecoder) error { e.keyEnd = dataValue(v); return nil })
						case unix.NFTA_SET_ELEM_DATA:
							a.Nested(func(v *netlink.AttributeDecoder) error { e.data, e.verdict = dataOrVerdict(v); return nil })
						case unix.NFTA_SET_ELEM_FLAGS:
							e.end = a.Uint32()&unix.NFT_SET_ELEM_INTERVAL_END != 0
						case unix.NFTA_SET_ELEM_EXPR:
							a.Nested(func(x *netlink.AttributeDecoder) error { counterOf(x, &e); return nil })
						}
					}
					return nil
				})
				out = append(out, e)
			}
			return nil
		})
	}
	return out, ad.Err()
}

func dataValue(v *netlink.AttributeDecoder) []byte {
	for v.Next() {
		if v.Type() == unix.NFTA_DATA_VALUE {
			return v.Bytes()
		}
	}
	return nil
}

func dataOrVerdict(v *netlink.AttributeDecoder) ([]byte, string) {
	for v.Next() {
		switch v.Type() {
		case unix.NFTA_DATA_VALUE:
			return v.Bytes(), ""
		case unix.NFTA_DATA_VERDICT:
			var code int32
			var chain string
			v.Nested(func(x *netlink.AttributeDecoder) error {
				x.ByteOrder = binary.BigEndian
				for x.Next() {
					switch x.Type() {
					case unix.NFTA_VERDICT_CODE:
						code = int32(x.Uint32())
					case unix.NFTA_VERDICT_CHAIN:
						chain = x.String()
					}
				}
				return nil
			})
			return nil, verdictString(expr.VerdictKind(code), chain)
		}
	}
	return nil, ""
}

// counterOf reads a counter expression of a set element.
func counterOf(x *netlink.AttributeDecoder, e *element) {
	x.ByteOrder = binary.BigEndian
	for x.Next() {
		if x.Type() != unix.NFTA_EXPR_DATA {
			continue
		}
		x.Nested(func(c *netlink.AttributeDecoder) error {
			c.ByteOrder = binary.BigEndian
			for c.Next() {
				switch c.Type() {
				case unix.NFTA_COUNTER_BYTES:
					e.bytes, e.counted = c.Uint64(), true
				case unix.NFTA_COUNTER_PACKETS:
					e.packets, e.counted = c.Uint64(), true
				}
			}
			return nil
		})
	}
}

func ctStateNames(mask uint32) string {
	var names []string
	for _, n := range []struct {
		bit  uint32
		name string
	}{{ctInvalid, "invalid"}, {ctEstablished, "established"}, {ctRelated, "related"}} {
		if mask&n.bit != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}
