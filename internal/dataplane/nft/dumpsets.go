package nft

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// dumpSet prints one set's elements, decoded by what the set holds.
func dumpSet(w *errWriter, name string, els []element, names map[string]string) {
	w.printf("map %s (%d elements)\n", name, len(els))
	be := binary.BigEndian.Uint32
	words := func(b []byte) []uint32 {
		var out []uint32
		for i := 0; i+4 <= len(b); i += 4 {
			out = append(out, be(b[i:]))
		}
		return out
	}
	var lines []string
	add := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	switch baseName(name) {
	case setIfaces:
		for _, e := range els {
			add("%s", ifString(e.key))
		}
	case setOwn4, setOwn6:
		for _, e := range els {
			a, _ := netip.AddrFromSlice(e.key[16:])
			add("%s . %s", ifString(e.key[:16]), a)
		}
	case setAddr4, setAddr6:
		for _, e := range els {
			a, _ := netip.AddrFromSlice(e.key)
			add("%s : identity %d", a, be(e.data))
		}
	case setRange4, setRange6, setRange4b, setRange6b:
		lines = rangeLines(els)
	case setGuard:
		for _, e := range els {
			add("identity %d : guard %d", be(e.key), be(e.data))
		}
	case setGroupI, setGroupE:
		for _, e := range els {
			add("identity %d : group %d", be(e.key), be(e.data)>>8)
		}
	case setBuckets:
		for _, e := range els {
			if bk := strings.TrimPrefix(baseName(strings.TrimPrefix(e.verdict, "jump ")), "bk"); bk != "0" {
				add("protocol %d : bucket %s", e.key[0], bk)
			}
		}
		add("(every other protocol : bucket 0)")
	case setTabI, setTabE:
		for _, e := range els {
			k := words(e.key)
			add("%s . group %d . bucket %d : port map %d", classString(k[0]), k[1]>>8, k[1]&0xff, be(e.data))
		}
	case setPorts, setOutcomes, setVerdicts, setOutRule, setRuleCounters:
		lines = outcomeLines(name, els, names)
	case setGuards:
		for _, e := range els {
			k := words(e.key)
			add("guard %d . guard %d : %s", k[0], k[1], e.verdict)
		}
	default:
		if strings.HasPrefix(baseName(name), "cls_") {
			for _, e := range els {
				add("identity %d : %s", be(e.key), classString(be(e.data)))
			}
			break
		}
		for _, e := range els {
			add("%x : %x %s", e.key, e.data, e.verdict)
		}
	}
	sort.Strings(lines)
	for _, l := range lines {
		w.printf("\t%s\n", l)
	}
}

// wordString reads an outcome word (wordAllow).
func wordString(w uint32) string {
	switch {
	case w&wordLogs != 0:
		return fmt.Sprintf("logs, outcome %d", w&^wordLogs)
	case w == wordAllow:
		return "allow"
	case w == wordDeny:
		return "deny"
	case w == wordReject:
		return "reject"
	case w == wordEscalate:
		return "escalate"
	}
	return fmt.Sprintf("word %d", w)
}

// classString reads a class word (classWord).
func classString(w uint32) string {
	lv, c := w>>classBits, w&maxClass
	if lv == wildcardLevel {
		return "wildcard"
	}
	return fmt.Sprintf("class %d . level %d", c, lv)
}

func ifString(b []byte) string { return string(bytes.TrimRight(b, "\x00")) }

// rangeLines pairs the start and end elements of an interval map.
func rangeLines(els []element) []string {
	sort.SliceStable(els, func(i, j int) bool {
		if c := bytes.Compare(els[i].key, els[j].key); c != 0 {
			return c < 0
		}
		return els[i].end && !els[j].end
	})
	var out []string
	for i, e := range els {
		if e.end {
			continue
		}
		lo, _ := netip.AddrFromSlice(e.key)
		hi := netip.IPv4Unspecified()
		if lo.Is6() {
			hi = netip.IPv6Unspecified()
		}
		hi = lastAddr(hi)
		if i+1 < len(els) && els[i+1].end {
			end, _ := netip.AddrFromSlice(els[i+1].key)
			hi = end.Prev()
		}
		out = append(out, fmt.Sprintf("%s-%s : identity %d", lo, hi, binary.BigEndian.Uint32(e.data)))
	}
	return out
}

func lastAddr(zero netip.Addr) netip.Addr {
	b := zero.AsSlice()
	for i := range b {
		b[i] = 0xff
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// outcomeLines renders the maps from port maps to outcomes to verdicts
// and rule counters.
func outcomeLines(name string, els []element, names map[string]string) []string {
	be := binary.BigEndian.Uint32
	var lines []string
	for _, e := range els {
		switch baseName(name) {
		case setPorts:
			lo, hi := binary.BigEndian.Uint16(e.key[4:]), binary.BigEndian.Uint16(e.keyEnd[4:])
			lines = append(lines, fmt.Sprintf("port map %d . ports %d-%d : outcome %d", be(e.key), lo, hi, be(e.data)))
		case setOutcomes:
			lines = append(lines, fmt.Sprintf("outcome %d : %s", be(e.key), wordString(be(e.data))))
		case setVerdicts:
			lines = append(lines, fmt.Sprintf("%s : %s", wordString(be(e.key)), e.verdict))
		case setOutRule:
			lines = append(lines, fmt.Sprintf("outcome %d : rule %08x", be(e.key), e.data))
		case setRuleCounters:
			note := ""
			if bytes.Equal(e.key, ruleKey("")) {
				note = " (no rule)"
			} else if n := names[fmt.Sprintf("%x", e.key)]; n != "" {
				note = " (" + n + ")"
			}
			lines = append(lines, fmt.Sprintf("rule %08x%s : packets %d bytes %d", e.key, note, e.packets, e.bytes))
		}
	}
	return lines
}
