package compile

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// program is the policy half of a compile: everything derived from the
// policy objects alone (peers, rules, indexes). A full compile builds it
// anew; SetPolicies swaps the changed policies in and out when the rest
// (namespaces, segments, CIDRs, protocols, named ports) stays as it is.
type program struct {
	namespaces  map[string]*policy.Namespace // with the metadata.name label
	segs        []*policy.Segment
	segIndex    map[string]int
	segAtoms    [][]int32 // CIDR atoms of each segment
	guardSegs   []bool    // segments a wall or conflict class names
	cidr        cidrSpace
	peers       []*peerDef          // by peer id; nil: free
	segPeers    [][]int32           // segment → peers that name it
	cidrPeers   map[int32][]int32   // CIDR class → CIDR peers that contain it (a cache)
	atomPeers   map[int32][]int32   // CIDR atom → CIDR peers that name it
	wlPeers     selIndex            // workload-form peers
	pols        map[string]*cpolicy // by key
	polByID     []*cpolicy          // by policy id; nil: free
	freeIDs     []int32
	order       []*cpolicy // as Set.Policies lists them, for the next comparison
	dups        bool       // two policies share a key: no incremental change
	subjects    selIndex   // policy ids by subject selector
	segSubject  [][]int32  // segment → ids of the policies whose subject it is
	uses        uses
	bucketOf    [256]uint8
	bucketProt  []int // bucket → protocol; -1 for "other"
	rules       []policy.RuleRef
	rulesShared bool       // a State holds rules: copy before changing a slot
	ruleEdits   []RuleNum  // slots written since the last State
	ruleLog     *ruleEdits // what the last State holds
}

// uses counts, over all policies, what the rest of a compile is built on:
// protocols (the buckets), named ports (part of identity keys) and CIDRs
// (the address classes). A change that makes one appear or disappear is
// compiled in full.
type uses struct {
	protos map[int]int
	names  map[portName]int
	cidrs  map[string]int // by cidrKey; segments' CIDRs count too
}

// footprint lists what one policy adds to uses, and the segments it
// names (which must exist).
type footprint struct {
	protos []int
	names  []portName
	cidrs  []string
	segs   []string
}

func footprintOf(p *policy.Policy) footprint {
	var fp footprint
	if p.Subject.Segment != "" {
		fp.segs = append(fp.segs, p.Subject.Segment)
	}
	for _, d := range []policy.Direction{policy.Ingress, policy.Egress} {
		for _, r := range p.Rules(d) {
			for _, pe := range r.Peers {
				switch {
				case pe.Any:
				case pe.Segment != "":
					fp.segs = append(fp.segs, pe.Segment)
				default:
					for _, c := range pe.CIDRs {
						fp.cidrs = append(fp.cidrs, cidrKey(c))
					}
				}
			}
			for _, s := range r.Services {
				fp.protos = append(fp.protos, int(s.Protocol))
				if s.Name != "" && s.Protocol != policy.ICMP && s.Protocol != policy.ICMPv6 {
					fp.names = append(fp.names, portName{s.Name, s.Protocol})
				}
			}
		}
	}
	return fp
}

func (u *uses) add(fp *footprint, n int) {
	for _, p := range fp.protos {
		u.protos[p] += n
	}
	for _, pn := range fp.names {
		u.names[pn] += n
	}
	for _, c := range fp.cidrs {
		u.cidrs[c] += n
	}
}

type portName struct {
	name  string
	proto policy.Protocol
}

type peerDef struct {
	key   string
	level int
	uses  [2]int  // rules that name the peer, by direction
	seg   int     // segment index, or -1
	atoms []int32 // CIDR peer
	wl    *matcher
}

func (d *peerDef) used(dir int) bool { return d.uses[dir] > 0 }

type svc struct {
	proto int
	ivs   [][2]int
	name  string
}

type crule struct {
	num    RuleNum
	action policy.Action
	any    bool
	peers  []int32
	svcs   []svc
}

type cpolicy struct {
	p       *policy.Policy // a copy: callers may edit theirs in place (unless snap.shared)
	snap    snapshot       // of p, to compare
	id      int32
	key     string
	observe bool
	rules   [2][]crule
	isoNum  [2]RuleNum
	fp      footprint
	seen    uint64 // visit mark, see Compiler.polEpoch
}

// newProgram compiles the policy objects of set; a numbers peers and rules
// so that unchanged ones keep the numbers of a previous compile.
func newProgram(set *policy.Set, a *allocBuilder, shared bool) (*program, error) {
	pr := &program{namespaces: map[string]*policy.Namespace{}, segIndex: map[string]int{},
		cidrPeers: map[int32][]int32{}, atomPeers: map[int32][]int32{}, pols: map[string]*cpolicy{},
		uses: uses{protos: map[int]int{}, names: map[portName]int{}, cidrs: map[string]int{}}}
	pr.cidr.atoms = map[string]int32{}
	pr.cidr.list = make([]policy.CIDR, 0, countCIDRs(set))
	for _, ns := range set.Namespaces {
		pr.namespaces[ns.Name] = withNameLabel(ns)
	}
	for i, s := range set.Segments {
		pr.segIndex[s.Name] = i
		pr.segs = append(pr.segs, s)
		var atoms []int32
		for _, c := range s.CIDRs {
			atoms = append(atoms, pr.cidr.atom(c))
			pr.uses.cidrs[cidrKey(c)]++
		}
		pr.segAtoms = append(pr.segAtoms, atoms)
	}
	pr.segPeers = make([][]int32, len(pr.segs))
	pr.segSubject = make([][]int32, len(pr.segs))
	pr.guardSegs = make([]bool, len(pr.segs))
	if err := pr.markGuards(set); err != nil {
		return nil, err
	}
	nrules := 1
	for _, p := range set.Policies {
		nrules += len(p.Ingress) + len(p.Egress) + 2 // and an isolation default each way
	}
	// The rule table is sized once: grown by appending, 100,000 rules
	// of a hundred bytes each were copied and collected several times.
	pr.rules, pr.ruleEdits, pr.ruleLog = make([]policy.RuleRef, 1, nrules), nil, nil
	for _, p := range set.Policies {
		cp, err := pr.compilePolicy(snapshotFor(p, shared), a)
		if err != nil {
			return nil, err
		}
		if pr.pols[cp.key] != nil {
			pr.dups = true
		}
		pr.addPolicy(cp, nil)
		pr.order = append(pr.order, cp)
	}
	pr.cidr.build()
	pr.buildBuckets()
	return pr, nil
}

func (pr *program) markGuards(set *policy.Set) error {
	mark := func(name string) error {
		i, ok := pr.segIndex[name]
		if !ok {
			return fmt.Errorf("compile: segment %q does not exist", name)
		}
		pr.guardSegs[i] = true
		return nil
	}
	for _, w := range set.Walls {
		for _, s := range w.Segments {
			if err := mark(s); err != nil {
				return err
			}
		}
	}
	for _, c := range set.ConflictClasses {
		if c.Subjects != "" {
			if err := mark(c.Subjects); err != nil {
				return err
			}
		}
		for _, d := range c.Datasets {
			if err := mark(d.Segment); err != nil {
				return err
			}
		}
	}
	return nil
}

func withNameLabel(ns *policy.Namespace) *policy.Namespace {
	labels := make(map[string]string, len(ns.Labels)+1)
	for k, v := range ns.Labels {
		labels[k] = v
	}
	labels[policy.MetadataNameLabel] = ns.Name
	c := *ns
	c.Labels = labels
	return &c
}

// compilePolicy compiles a snapshot of a policy, numbering its rules (in
// pr.rules) and peers; addPolicy makes it count.
func (pr *program) compilePolicy(snap snapshot, a *allocBuilder) (*cpolicy, error) {
	p := snap.p
	cp := &cpolicy{p: p, snap: snap, key: p.Key(), observe: p.Mode == policy.Observe, fp: footprintOf(p)}
	if s := p.Subject.Segment; s != "" {
		if _, ok := pr.segIndex[s]; !ok {
			return nil, fmt.Errorf("compile: %s: subject segment %q does not exist", cp.key, s)
		}
	}
	for _, d := range []policy.Direction{policy.Ingress, policy.Egress} {
		if p.Isolate[d] {
			ref := policy.IsolationRef(p, d)
			cp.isoNum[d] = pr.ruleNum(a, ref)
		}
		for i, r := range p.Rules(d) {
			ref := policy.RuleRef{Policy: cp.key, Tier: p.Tier, Direction: d, Index: i, ID: r.ID,
				Action: r.Action, Log: r.Log, Pos: r.Pos}
			cr := crule{num: pr.ruleNum(a, ref), action: r.Action, any: len(r.Peers) == 0}
			for j := range r.Peers {
				id, any, err := pr.peer(&r.Peers[j], a)
				if err != nil {
					return nil, fmt.Errorf("compile: %s %s rule %d: %w", cp.key, d, i, err)
				}
				if any {
					cr.any = true
				} else {
					cr.peers = append(cr.peers, id)
				}
			}
			for _, s := range r.Services {
				cr.svcs = append(cr.svcs, compileService(s))
			}
			cp.rules[d] = append(cp.rules[d], cr)
		}
	}
	return cp, nil
}

// addPolicy indexes cp by key and subject and counts what it uses;
// touched records, for each peer whose counts change, whether it was
// used before (nil: no record).
func (pr *program) addPolicy(cp *cpolicy, touched map[int32][2]bool) {
	if n := len(pr.freeIDs); n > 0 {
		cp.id, pr.freeIDs = pr.freeIDs[n-1], pr.freeIDs[:n-1]
		pr.polByID[cp.id] = cp
	} else {
		cp.id = int32(len(pr.polByID))
		pr.polByID = append(pr.polByID, cp)
	}
	pr.pols[cp.key] = cp
	if s := cp.p.Subject; s.Segment != "" {
		seg := pr.segIndex[s.Segment]
		pr.segSubject[seg] = append(pr.segSubject[seg], cp.id)
	} else {
		pr.subjects.add(cp.id, matcher{nsOnly: cp.p.Namespace, nsm: s.Namespaces, sel: s.Workloads})
	}
	pr.count(cp, 1, touched)
}

// removePolicy undoes addPolicy. The peers cp named stay defined until
// dropPeer: groups being rebuilt may still look at them.
func (pr *program) removePolicy(cp *cpolicy, touched map[int32][2]bool) {
	pr.count(cp, -1, touched)
	if s := cp.p.Subject; s.Segment != "" {
		seg := pr.segIndex[s.Segment]
		pr.segSubject[seg] = without(pr.segSubject[seg], cp.id)
	} else {
		pr.subjects.remove(cp.id)
	}
	if pr.pols[cp.key] == cp {
		delete(pr.pols, cp.key)
	}
	pr.polByID[cp.id] = nil
	pr.freeIDs = append(pr.freeIDs, cp.id)
}

func (pr *program) count(cp *cpolicy, n int, touched map[int32][2]bool) {
	pr.uses.add(&cp.fp, n)
	for d := range cp.rules {
		for _, r := range cp.rules[d] {
			for _, p := range r.peers {
				def := pr.peers[p]
				if _, ok := touched[p]; !ok && touched != nil {
					touched[p] = [2]bool{def.used(0), def.used(1)}
				}
				def.uses[d] += n
			}
		}
	}
}

// dropPeer forgets a peer that no rule names any more.
func (pr *program) dropPeer(id int32) {
	def := pr.peers[id]
	switch {
	case def.seg >= 0:
		pr.segPeers[def.seg] = without(pr.segPeers[def.seg], id)
	case def.wl != nil:
		pr.wlPeers.remove(id)
	case len(def.atoms) > 0:
		for _, a := range def.atoms {
			if l := without(pr.atomPeers[a], id); len(l) > 0 {
				pr.atomPeers[a] = l
			} else {
				delete(pr.atomPeers, a)
			}
		}
		clear(pr.cidrPeers)
	}
	pr.peers[id] = nil
}

func without(s []int32, x int32) []int32 {
	out := s[:0]
	for _, y := range s {
		if y != x {
			out = append(out, y)
		}
	}
	return out
}

func (pr *program) ruleNum(a *allocBuilder, ref policy.RuleRef) RuleNum {
	n := RuleNum(a.number(ruleKey(ref.Policy, ref.Direction, ref.Index), kindRule))
	pr.setRule(n, ref)
	return n
}

// setRule writes the rule table copy-on-write: States share it, and see
// only their length of it, so appending is free and a changed slot costs
// one copy per State.
func (pr *program) setRule(n RuleNum, ref policy.RuleRef) {
	if int(n) < len(pr.rules) && pr.rules[n] == ref {
		return
	}
	if int(n) < len(pr.rules) && pr.rulesShared {
		pr.rules, pr.rulesShared = slices.Clone(pr.rules), false
	}
	for int(n) >= len(pr.rules) {
		pr.rules = append(pr.rules, policy.RuleRef{})
	}
	pr.rules[n] = ref
	pr.ruleEdits = append(pr.ruleEdits, n)
}

// countCIDRs counts the CIDRs set names, at most the atoms of its CIDR
// space, so that the list of them is made once.
func countCIDRs(set *policy.Set) int {
	n := 0
	for _, s := range set.Segments {
		n += len(s.CIDRs)
	}
	for _, p := range set.Policies {
		for _, rules := range [][]policy.Rule{p.Ingress, p.Egress} {
			for i := range rules {
				for j := range rules[i].Peers {
					n += len(rules[i].Peers[j].CIDRs)
				}
			}
		}
	}
	return n
}

// compileService turns a service into port intervals; ICMP matches on
// type<<8|code, so a code without a type is one interval per type.
func compileService(s policy.Service) svc {
	cs := svc{proto: int(s.Protocol)}
	switch {
	case s.Protocol == policy.ICMP || s.Protocol == policy.ICMPv6:
		switch {
		case s.Type != nil && s.Code != nil:
			v := *s.Type<<8 | *s.Code
			cs.ivs = [][2]int{{v, v}}
		case s.Type != nil:
			cs.ivs = [][2]int{{*s.Type << 8, *s.Type<<8 | 0xff}}
		case s.Code != nil:
			for t := 0; t < 256; t++ {
				cs.ivs = append(cs.ivs, [2]int{t<<8 | *s.Code, t<<8 | *s.Code})
			}
		default:
			cs.ivs = [][2]int{{0, 0xffff}}
		}
	case s.Name != "":
		cs.name = s.Name
	case s.Port == 0:
		cs.ivs = [][2]int{{0, 0xffff}}
	case s.EndPort > s.Port:
		cs.ivs = [][2]int{{s.Port, s.EndPort}}
	default:
		cs.ivs = [][2]int{{s.Port, s.Port}}
	}
	return cs
}

// peer returns the id of a rule peer, deduplicated by canonical form;
// any reports a peer that matches everything.
func (pr *program) peer(p *policy.Peer, a *allocBuilder) (id int32, any bool, err error) {
	def := &peerDef{seg: -1}
	switch {
	case p.Any:
		return 0, true, nil
	case p.Segment != "":
		i, ok := pr.segIndex[p.Segment]
		if !ok {
			return 0, false, fmt.Errorf("segment %q does not exist", p.Segment)
		}
		def.key, def.level, def.seg = "s:"+p.Segment, 2, i
	case len(p.CIDRs) == 1:
		def.key, def.level = "c:"+cidrKey(p.CIDRs[0]), 2
	case len(p.CIDRs) > 1:
		keys := make([]string, 0, len(p.CIDRs))
		for _, c := range p.CIDRs {
			keys = append(keys, cidrKey(c))
		}
		sort.Strings(keys)
		def.key, def.level = "c:"+strings.Join(keys, ";"), 2
	default:
		def.wl = &matcher{nsm: p.Namespaces, sel: p.Workloads}
		def.key = "w:" + nsMatchKey(p.Namespaces) + "|" + selectorKey(p.Workloads)
		def.level = 1
		if p.Workloads != nil && !p.Workloads.Empty() {
			def.level = 0
		}
	}
	n := int32(a.number("p:"+def.key, kindPeer))
	for int(n) >= len(pr.peers) {
		pr.peers = append(pr.peers, nil)
	}
	if pr.peers[n] == nil {
		for _, c := range p.CIDRs {
			def.atoms = append(def.atoms, pr.cidr.atom(c))
		}
		pr.peers[n] = def
		pr.indexPeer(n, def)
	}
	return n, false, nil
}

func (pr *program) indexPeer(id int32, def *peerDef) {
	switch {
	case def.seg >= 0:
		pr.segPeers[def.seg] = append(pr.segPeers[def.seg], id)
	case def.wl != nil:
		pr.wlPeers.add(id, *def.wl)
	case len(def.atoms) > 0:
		for _, a := range slices.Compact(slices.Sorted(slices.Values(def.atoms))) {
			pr.atomPeers[a] = append(pr.atomPeers[a], id)
		}
		clear(pr.cidrPeers)
	}
}

// cidrPeersOf lists, sorted, the CIDR peers that contain the addresses of
// a CIDR class: those naming one of its atoms (cached: many identities
// share a class).
func (pr *program) cidrPeersOf(class int32) []int32 {
	if ps, ok := pr.cidrPeers[class]; ok {
		return ps
	}
	var out []int32
	for _, a := range pr.cidr.classes[class] {
		out = append(out, pr.atomPeers[a]...)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	pr.cidrPeers[class] = out
	return out
}

func intersects(a, sorted []int32) bool {
	for _, x := range a {
		i := sort.Search(len(sorted), func(i int) bool { return sorted[i] >= x })
		if i < len(sorted) && sorted[i] == x {
			return true
		}
	}
	return false
}

func (pr *program) buildBuckets() {
	pr.bucketProt = []int{-1}
	list := make([]int, 0, len(pr.uses.protos))
	for p, n := range pr.uses.protos {
		if n > 0 {
			list = append(list, p)
		}
	}
	sort.Ints(list)
	for _, p := range list {
		pr.bucketOf[p] = uint8(len(pr.bucketProt))
		pr.bucketProt = append(pr.bucketProt, p)
	}
}

// polCmp orders policies as the evaluator walks them: by tier, priority
// and key.
func polCmp(a, b *cpolicy) int {
	if a.p.Tier != b.p.Tier {
		return int(a.p.Tier) - int(b.p.Tier)
	}
	if a.p.Priority != b.p.Priority {
		return cmp.Compare(a.p.Priority, b.p.Priority)
	}
	return strings.Compare(a.key, b.key)
}

func nsMatchKey(m policy.NamespaceMatch) string {
	names := append([]string(nil), m.Names...)
	sort.Strings(names)
	return strings.Join(names, ",") + "|" + selectorKey(m.Selector)
}

// selectorKey is a canonical form: equal keys select the same objects.
func selectorKey(s *policy.Selector) string {
	if s == nil {
		return "nil"
	}
	var parts []string
	for k, v := range s.MatchLabels {
		parts = append(parts, "="+k+"\x00"+v)
	}
	for _, r := range s.MatchExpressions {
		vals := append([]string(nil), r.Values...)
		sort.Strings(vals)
		parts = append(parts, r.Operator+" "+r.Key+"\x00"+strings.Join(vals, "\x00"))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, "\x01") + "}"
}
