package nft

import (
	"fmt"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// builder writes the fixed part of one generation: its sets, and the
// chains whose rules do not depend on the compiled state (the
// dispatch by family, address kind, side and port kind; the lookups).
type builder struct {
	gen         int
	logGroup    uint16
	logRate     uint32
	mark        uint32 // the escalation bit of the packet mark
	queueNum    uint16
	queueNative bool
	rangeSlot   int // which of the two outside-range sets the chains look up
}

func (b *builder) n(base string) string { return genName(base, b.gen) }

func (b *builder) goTo(chain string) []expr.Any { return verdict(expr.VerdictGoto, b.n(chain)) }
func (b *builder) jump(chain string) []expr.Any { return verdict(expr.VerdictJump, b.n(chain)) }

var (
	accept = verdict(expr.VerdictAccept, "")
	drop   = verdict(expr.VerdictDrop, "")
	ret    = verdict(expr.VerdictReturn, "")
)

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// sets returns the generation's sets, empty.
func (b *builder) sets(t *nftables.Table) []*nftables.Set {
	var out []*nftables.Set
	for _, s := range allSetSpecs() {
		set := &nftables.Set{Table: t, ID: nextSetID(), Name: b.n(s.name), KeyType: s.key,
			Interval: s.interval, Concatenation: s.concat, Comment: Tag}
		switch {
		case s.verdict:
			set.IsMap, set.DataType = true, nftables.TypeVerdict
		case s.data.Bytes > 0:
			set.IsMap, set.DataType = true, s.data
		}
		out = append(out, set)
	}
	return out
}

// chainNames lists the fixed chains of the generation.
func (b *builder) chainNames() []string {
	names := []string{chainFromWLFwd, chainToWLFwd, chainFromWLIn, chainToWLOut, chainSpoofed,
		chainDecide, chainEscalate, chainNoEntry, chainReject, chainEscMark}
	for _, f := range []int{4, 6} {
		names = append(names, decisionChain(f, "", ""))
		for _, s := range []string{kindExact, kindRange} {
			names = append(names, decisionChain(f, s, ""))
			for _, d := range []string{kindExact, kindRange} {
				names = append(names, decisionChain(f, s, d))
			}
		}
		for _, d := range []policy.Direction{policy.Ingress, policy.Egress} {
			for _, p := range []string{kindExact, kindRange} {
				names = append(names, sideChain(d, f, p, ""), sideChain(d, f, p, sideGrouped))
				for _, k := range portKinds {
					names = append(names, sideChain(d, f, p, k))
				}
			}
		}
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = b.n(n)
	}
	return out
}

// baseRules returns the rules of the three base chains, which send
// packets from and to workload interfaces into this generation.
func (b *builder) baseRules() []chainRules {
	note := Tag + " gen " + strconv.Itoa(b.gen)
	est := cat(ctState(ctEstablished|ctRelated), accept)
	ifs := b.n(setIfaces)
	from := func(chain string) []expr.Any {
		return cat(meta(expr.MetaKeyIIFNAME, reg(0)), member(ifs, reg(0), false), b.goTo(chain))
	}
	to := func(chain string) []expr.Any {
		return cat(meta(expr.MetaKeyOIFNAME, reg(0)), member(ifs, reg(0), false), b.goTo(chain))
	}
	return []chainRules{
		{chain: chainForward, flush: true, rules: [][]expr.Any{est, from(chainFromWLFwd), to(chainToWLFwd)}, notes: []string{note, note, note}},
		{chain: chainInput, flush: true, rules: [][]expr.Any{est, from(chainFromWLIn)}, notes: []string{note, note}},
		{chain: chainOutput, flush: true, rules: [][]expr.Any{est, to(chainToWLOut)}, notes: []string{note, note}},
	}
}

// fixedRules returns the rules of the generation's fixed chains. With
// enforce false, decide accepts everything (anti-spoofing still holds).
func (b *builder) fixedRules(enforce bool) []chainRules {
	invalid := cat(ctState(ctInvalid), drop)
	decide := b.goTo(chainDecide)
	out := []chainRules{
		{chain: b.n(chainFromWLFwd), rules: [][]expr.Any{invalid, b.spoof(4), b.spoof(6), decide}},
		{chain: b.n(chainToWLFwd), rules: [][]expr.Any{invalid, decide}},
		{chain: b.n(chainFromWLIn), rules: append(b.neighbourDiscovery(), invalid, b.spoof(4), b.spoof(6), decide)},
		{chain: b.n(chainToWLOut), rules: append(b.neighbourDiscovery(), invalid, decide)},
		{chain: b.n(chainSpoofed), rules: [][]expr.Any{counterRef(counterSpoofed),
			nflog(b.logGroup, LogPrefix(LogSpoofed, ""), b.logRate), drop}},
		{chain: b.n(chainNoEntry), rules: [][]expr.Any{counterRef(counterNoEntry),
			nflog(b.logGroup, LogPrefix(LogNoEntry, ""), b.logRate), drop}},
		{chain: b.n(chainEscalate), rules: [][]expr.Any{cat(counterRef(counterEscal),
			[]expr.Any{queueExpr(b.queueNum, b.queueNative)})}},
		{chain: b.n(chainReject), rules: rejectRules()},
		{chain: b.n(chainEscMark), rules: [][]expr.Any{cat(markSet(b.mark, true), ret)}},
		b.decideRules(enforce),
	}
	for _, f := range []int{4, 6} {
		out = append(out, b.familyRules(f)...)
		for _, d := range []policy.Direction{policy.Ingress, policy.Egress} {
			for _, p := range []string{kindExact, kindRange} {
				out = append(out, b.sideRules(d, f, p)...)
			}
		}
	}
	return out
}

func (b *builder) decideRules(enforce bool) chainRules {
	if !enforce {
		return chainRules{chain: b.n(chainDecide), flush: true, rules: [][]expr.Any{accept}}
	}
	return chainRules{chain: b.n(chainDecide), flush: true, rules: [][]expr.Any{
		markSet(b.mark, false),
		cat(nfproto(4), b.goTo(decisionChain(4, "", ""))),
		cat(nfproto(6), b.goTo(decisionChain(6, "", ""))),
		drop, // neither IPv4 nor IPv6 in an inet chain: cannot happen
	}}
}

// spoof drops a packet from a workload interface whose source address is
// not one of that workload's.
func (b *builder) spoof(f int) []expr.Any {
	set := setOwn4
	if f == 6 {
		set = setOwn6
	}
	return cat(nfproto(f), meta(expr.MetaKeyIIFNAME, reg(0)), addr(f, true, reg(4)),
		member(b.n(set), reg(0), true), b.goTo(chainSpoofed))
}

// neighbourDiscovery accepts IPv6 neighbour discovery (hop limit 255)
// and multicast listener messages (hop limit 1) between a workload and
// the host: link-local control traffic that routing cannot carry further,
// which conntrack leaves untracked, and without which IPv6 stops working.
func (b *builder) neighbourDiscovery() [][]expr.Any {
	typ := payload(expr.PayloadBaseTransportHeader, 0, 1, reg(1))
	hop := func(h byte) []expr.Any {
		return cat(payload(expr.PayloadBaseNetworkHeader, 7, 1, reg(2)), cmp(expr.CmpOpEq, reg(2), []byte{h}))
	}
	icmp6 := cat(nfproto(6), l4proto(unix.IPPROTO_ICMPV6), typ)
	return [][]expr.Any{
		cat(icmp6, []expr.Any{&expr.Range{Op: expr.CmpOpEq, Register: reg(1), FromData: []byte{133}, ToData: []byte{137}}}, hop(255), accept),
		cat(icmp6, []expr.Any{&expr.Range{Op: expr.CmpOpEq, Register: reg(1), FromData: []byte{130}, ToData: []byte{132}}}, hop(1), accept),
		cat(icmp6, cmp(expr.CmpOpEq, reg(1), []byte{143}), hop(1), accept),
	}
}

func (b *builder) addrSet(f int, kind string) string {
	if kind == kindExact {
		if f == 4 {
			return setAddr4
		}
		return setAddr6
	}
	return rangeSet(f, b.rangeSlot)
}

// rangeSet names the outside-range set of family f in slot 0 or 1.
func rangeSet(f, slot int) string {
	switch {
	case f == 4 && slot == 0:
		return setRange4
	case f == 4:
		return setRange4b
	case slot == 0:
		return setRange6
	}
	return setRange6b
}

// rangeChains returns, flushed and written again, the fixed chains that
// look up the outside ranges: they then look up the builder's slot.
func (b *builder) rangeChains() []chainRules {
	names := map[string]bool{}
	for _, f := range []int{4, 6} {
		for slot := range 2 {
			names[b.n(rangeSet(f, slot))] = true
		}
	}
	var out []chainRules
	for _, cr := range b.fixedRules(true) {
		if looksUp(cr.rules, names) {
			cr.flush = true
			out = append(out, cr)
		}
	}
	return out
}

func looksUp(rules [][]expr.Any, sets map[string]bool) bool {
	for _, r := range rules {
		for _, e := range r {
			if l, ok := e.(*expr.Lookup); ok && sets[l.SetName] {
				return true
			}
		}
	}
	return false
}

// familyRules dispatches by the kinds of the source and destination
// addresses, then checks the guard table and judges the sides that have a
// workload: egress when the source is one, ingress when the destination is.
func (b *builder) familyRules(f int) []chainRules {
	isExact := func(src bool, yes, no string) [][]expr.Any {
		return [][]expr.Any{
			// A lookup with a destination register, whose value is not
			// used: a membership test of a map is refused by older kernels
			// (Debian 12's 6.1: TestNoMembershipLookupIntoAMap).
			cat(addr(f, src, reg(4)), lookupMap(b.n(b.addrSet(f, kindExact)), reg(4), reg(0)), b.goTo(yes)),
			b.goTo(no),
		}
	}
	out := []chainRules{
		{chain: b.n(decisionChain(f, "", "")), rules: isExact(true, decisionChain(f, kindExact, ""), decisionChain(f, kindRange, ""))},
	}
	for _, s := range []string{kindExact, kindRange} {
		out = append(out, chainRules{chain: b.n(decisionChain(f, s, "")),
			rules: isExact(false, decisionChain(f, s, kindExact), decisionChain(f, s, kindRange))})
		for _, d := range []string{kindExact, kindRange} {
			rules := [][]expr.Any{b.guard(f, s, d)}
			if s == kindExact {
				rules = append(rules, b.jump(sideChain(policy.Egress, f, d, "")))
			}
			if d == kindExact {
				rules = append(rules, b.jump(sideChain(policy.Ingress, f, s, "")))
			}
			rules = append(rules, carriersReset(), cat(markTest(b.mark), b.goTo(chainEscalate)), accept)
			out = append(out, chainRules{chain: b.n(decisionChain(f, s, d)), rules: rules})
		}
	}
	return out
}

// identity stores in c the identity of the source or destination address.
func (b *builder) identity(c carrier, f int, src bool, kind string) []expr.Any {
	return mapInto(c, b.n(b.addrSet(f, kind)), addr(f, src, reg(0)))
}

// guard looks up (source guard . destination guard): a wall's chain
// drops, a conflict class's chain marks the packet for escalation.
func (b *builder) guard(f int, src, dst string) []expr.Any {
	guard := b.n(setGuard)
	return cat(
		b.identity(carrierP, f, true, src), mapInto(carrierP, guard, carrierP.load(reg(0))),
		b.identity(carrierC, f, false, dst), mapInto(carrierC, guard, carrierC.load(reg(0))),
		carrierP.load(reg(0)), carrierC.load(reg(1)), lookupMap(b.n(setGuards), reg(0), unix.NFT_REG_VERDICT))
}

// sideRules judges one side. The dispatch chain puts the local side's
// group word in carrier C (no group → the side allows), has the protocol
// bucket's chain fill in its low byte, and goes to the port kind's chain:
// one lookup per level, then the wildcard; no entry → fail closed.
func (b *builder) sideRules(d policy.Direction, f int, peer string) []chainRules {
	disp := sideChain(d, f, peer, "")
	localSrc := d == policy.Egress
	group := b.n(groupSet(d))
	// The local side's group: found, the side is judged (grouped chain);
	// missing, the lookup stops the rule and the next returns. Not an
	// inverted membership test of the group map: older kernels (Debian
	// 12's 6.1 among them) refuse a lookup into a map without a destination
	// register (TestNoMembershipLookupIntoAMap).
	grouped := sideChain(d, f, peer, sideGrouped)
	head := [][]expr.Any{
		cat(b.identity(carrierC, f, localSrc, kindExact), mapInto(carrierC, group, carrierC.load(reg(0))), b.goTo(grouped)),
		ret,
	}
	rules := [][]expr.Any{
		cat(meta(expr.MetaKeyL4PROTO, reg(0)), lookupMap(b.n(setBuckets), reg(0), unix.NFT_REG_VERDICT)),
	}
	for _, p := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_SCTP} {
		rules = append(rules, cat(l4proto(p), b.goTo(sideChain(d, f, peer, portTH))))
	}
	for _, p := range []byte{unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6} {
		rules = append(rules, cat(l4proto(p), b.goTo(sideChain(d, f, peer, portICMP))))
	}
	rules = append(rules, b.goTo(sideChain(d, f, peer, portOther)))
	out := []chainRules{{chain: b.n(disp), rules: head}, {chain: b.n(grouped), rules: rules}}
	for _, k := range portKinds {
		var rules [][]expr.Any
		for lv := 0; lv <= wildcardLevel; lv++ {
			rules = append(rules, b.level(d, f, peer, k, lv))
		}
		rules = append(rules, b.goTo(chainNoEntry))
		out = append(out, chainRules{chain: b.n(sideChain(d, f, peer, k)), rules: rules})
	}
	return out
}

// level is one lookup of a side, one rule: the peer's class word for the
// level goes to carrier P; (class word . group word) gives a port map,
// (port map . port) an outcome; the outcome's rule key (in carrier C)
// counts the packet, and the outcome's word (in P) gives the verdict. A key that is
// missing stops the rule, and the next level is tried.
func (b *builder) level(d policy.Direction, f int, peer, portKind string, lv int) []expr.Any {
	var class []expr.Any
	if lv == wildcardLevel {
		class = cat(imm(reg(0), u32(classWord(0, wildcardLevel))), carrierP.store(reg(0)))
	} else {
		class = cat(b.identity(carrierP, f, d == policy.Ingress, peer),
			mapInto(carrierP, b.n(classSet(d, lv)), carrierP.load(reg(0))))
	}
	return cat(class,
		mapInto(carrierP, b.n(tabSet(d)), carrierP.load(reg(0)), carrierC.load(reg(1))),
		mapInto(carrierP, b.n(setPorts), carrierP.load(reg(0)), port(portKind, reg(1))),
		mapInto(carrierC, b.n(setOutRule), carrierP.load(reg(0))),
		carrierC.load(reg(0)), member(setRuleCounters, reg(0), false),
		mapInto(carrierP, b.n(setOutcomes), carrierP.load(reg(0))),
		carrierP.load(reg(0)), lookupMap(b.n(setVerdicts), reg(0), unix.NFT_REG_VERDICT))
}

// bucketRules fill in the low byte of the group word in carrier C with
// the protocol bucket (the chain that the buckets map jumps to).
func (b *builder) bucketRules(bk uint8) [][]expr.Any {
	if bk == 0 {
		return nil
	}
	return [][]expr.Any{orLowByte(bk)}
}

// Outcome words. The outcomes map gives an outcome's word, and the small
// verdicts map the word's verdict: one element per action and one per
// outcome that logs (its own chain). The kernel checks, whenever a
// transaction changes the chains that reach a verdict map, every element
// of it along every path (loop detection): with one verdict element per
// outcome, 100,000 outcomes made a first load's switch cost 2 s.
const (
	wordAllow    = 1
	wordDeny     = 2
	wordReject   = 3
	wordEscalate = 4
	wordLogs     = 1 << 31 // | the outcome: an outcome that logs
)

// actionWord is the word of an outcome that logs nothing.
func actionWord(a policy.Action) uint32 {
	switch a {
	case policy.Allow:
		return wordAllow
	case policy.Reject:
		return wordReject
	case policy.Escalate:
		return wordEscalate
	}
	return wordDeny // deny, and anything unknown: fail closed
}

// fixedVerdicts are the verdicts map's elements for the actions.
func (b *builder) fixedVerdicts() []nftables.SetElement {
	v := func(w uint32, kind expr.VerdictKind, chain string) nftables.SetElement {
		if chain != "" {
			chain = b.n(chain)
		}
		return nftables.SetElement{Key: u32(w), VerdictData: &expr.Verdict{Kind: kind, Chain: chain}}
	}
	return []nftables.SetElement{v(wordAllow, expr.VerdictReturn, ""), v(wordDeny, expr.VerdictDrop, ""),
		v(wordReject, expr.VerdictGoto, chainReject), v(wordEscalate, expr.VerdictGoto, chainEscMark)}
}

// outcome renders what an outcome does: the word of its element in the
// outcomes map and, when it logs, the rules of its own chain (nil
// otherwise; the verdicts map then sends the word to that chain), with a
// signature that changes exactly when either does.
func (b *builder) outcome(id compile.OutcomeID, o compile.Outcome, rules []policy.RuleRef) (uint32, [][]expr.Any, string) {
	ref := func(n compile.RuleNum) policy.RuleRef {
		if int(n) < len(rules) {
			return rules[n]
		}
		return policy.RuleRef{}
	}
	r, wd := ref(o.Rule), ref(o.WouldDeny)
	var logs [][]expr.Any
	sig := string(o.Action)
	if r.ID != "" && r.Log {
		p := LogPrefix(actionLogKind(o.Action), r.ID)
		logs = append(logs, nflog(b.logGroup, p, b.logRate))
		sig += "|l" + p
	}
	if o.WouldDeny != 0 && wd.ID != "" {
		p := LogPrefix(LogWouldDeny, wd.ID)
		logs = append(logs, nflog(b.logGroup, p, b.logRate))
		sig += "|w" + p
	}
	if logs == nil {
		return actionWord(o.Action), nil, sig
	}
	switch o.Action {
	case policy.Allow:
		logs = append(logs, ret)
	case policy.Reject:
		logs = append(logs, b.goTo(chainReject))
	case policy.Escalate:
		logs = append(logs, b.goTo(chainEscMark))
	default:
		logs = append(logs, drop)
	}
	return wordLogs | uint32(id), logs, sig
}

// logVerdict is the verdicts map's element of an outcome that logs.
func (b *builder) logVerdict(id compile.OutcomeID) nftables.SetElement {
	return nftables.SetElement{Key: u32(wordLogs | uint32(id)),
		VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: b.n(outcomeChain(id))}}
}

func (b *builder) wallRules(w *policy.Wall) ([][]expr.Any, string) {
	p := LogPrefix(LogWall, w.Name)
	return [][]expr.Any{counterRef(wallCounterName(w.Name)), nflog(b.logGroup, p, b.logRate), drop}, "wall|" + w.Name
}

func (b *builder) conflictRules() [][]expr.Any {
	return [][]expr.Any{cat(markSet(b.mark, true), ret)}
}

func (b *builder) String() string { return fmt.Sprintf("generation %d", b.gen) }
