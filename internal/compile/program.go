package compile

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// program is the policy half of a compile: everything derived from the
// policy objects alone (peers, rules, indexes), rebuilt when they change.
type program struct {
	namespaces map[string]*policy.Namespace // with the metadata.name label
	segs       []*policy.Segment
	segIndex   map[string]int
	segAtoms   [][]int32 // CIDR atoms of each segment
	guardSegs  []bool    // segments a wall or conflict class names
	cidr       cidrSpace
	peers      []*peerDef // by peer id
	segPeers   [][]int32  // segment → peers that name it
	cidrPeers  map[int32][]int32
	wlPeers    selIndex             // workload-form peers
	pols       []*cpolicy           // sorted by tier, priority, key
	subjects   selIndex             // policies by subject selector
	segSubject [][]int32            // segment → policies whose subject it is
	names      [2]map[portName]bool // named ports rules use, by direction
	bucketOf   [256]uint8
	bucketProt []int // bucket → protocol; -1 for "other"
	rules      []policy.RuleRef
}

type portName struct {
	name  string
	proto policy.Protocol
}

type peerDef struct {
	key   string
	level int
	dirs  [2]bool
	seg   int     // segment index, or -1
	atoms []int32 // CIDR peer
	wl    *matcher
}

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
	p       *policy.Policy
	key     string
	observe bool
	rules   [2][]crule
	isoNum  [2]RuleNum
}

// newProgram compiles the policy objects of set; a numbers peers and rules
// so that unchanged ones keep the numbers of a previous compile.
func newProgram(set *policy.Set, a *allocBuilder) (*program, error) {
	pr := &program{namespaces: map[string]*policy.Namespace{}, segIndex: map[string]int{},
		cidrPeers: map[int32][]int32{}}
	pr.cidr.atoms = map[string]int32{}
	for _, ns := range set.Namespaces {
		pr.namespaces[ns.Name] = withNameLabel(ns)
	}
	for i, s := range set.Segments {
		pr.segIndex[s.Name] = i
		pr.segs = append(pr.segs, s)
		var atoms []int32
		for _, c := range s.CIDRs {
			atoms = append(atoms, pr.cidr.atom(c))
		}
		pr.segAtoms = append(pr.segAtoms, atoms)
	}
	pr.segPeers = make([][]int32, len(pr.segs))
	pr.segSubject = make([][]int32, len(pr.segs))
	pr.guardSegs = make([]bool, len(pr.segs))
	if err := pr.markGuards(set); err != nil {
		return nil, err
	}
	pr.rules = []policy.RuleRef{{}}
	pr.names = [2]map[portName]bool{{}, {}}
	protos := map[int]bool{}
	pols := append([]*policy.Policy(nil), set.Policies...)
	sort.SliceStable(pols, func(i, j int) bool {
		pi, pj := pols[i], pols[j]
		if pi.Tier != pj.Tier {
			return pi.Tier < pj.Tier
		}
		if pi.Priority != pj.Priority {
			return pi.Priority < pj.Priority
		}
		return pi.Key() < pj.Key()
	})
	for _, p := range pols {
		cp, err := pr.compilePolicy(p, a, protos)
		if err != nil {
			return nil, err
		}
		pr.pols = append(pr.pols, cp)
	}
	pr.cidr.build()
	pr.indexPolicies()
	pr.buildBuckets(protos)
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

func (pr *program) compilePolicy(p *policy.Policy, a *allocBuilder, protos map[int]bool) (*cpolicy, error) {
	cp := &cpolicy{p: p, key: p.Key(), observe: p.Mode == policy.Observe}
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
				id, any, err := pr.peer(&r.Peers[j], d, a)
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
				cs := compileService(s)
				protos[cs.proto] = true
				if cs.name != "" {
					pr.names[d][portName{cs.name, s.Protocol}] = true
				}
				cr.svcs = append(cr.svcs, cs)
			}
			cp.rules[d] = append(cp.rules[d], cr)
		}
	}
	return cp, nil
}

func (pr *program) ruleNum(a *allocBuilder, ref policy.RuleRef) RuleNum {
	n := RuleNum(a.number("r:"+ref.Policy+"\x00"+ref.Direction.String()+"\x00"+strconv.Itoa(ref.Index), kindRule))
	for int(n) >= len(pr.rules) {
		pr.rules = append(pr.rules, policy.RuleRef{})
	}
	pr.rules[n] = ref
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
func (pr *program) peer(p *policy.Peer, d policy.Direction, a *allocBuilder) (id int32, any bool, err error) {
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
	case len(p.CIDRs) > 0:
		keys := make([]string, 0, len(p.CIDRs))
		for _, c := range p.CIDRs {
			def.atoms = append(def.atoms, pr.cidr.atom(c))
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
		pr.peers[n] = def
		pr.indexPeer(n, def)
	}
	pr.peers[n].dirs[d] = true
	return n, false, nil
}

func (pr *program) indexPeer(id int32, def *peerDef) {
	switch {
	case def.seg >= 0:
		pr.segPeers[def.seg] = append(pr.segPeers[def.seg], id)
	case def.wl != nil:
		pr.wlPeers.add(id, *def.wl)
	}
}

// cidrPeersOf lists the CIDR peers that contain the addresses of a CIDR
// class (cached: few classes, many identities).
func (pr *program) cidrPeersOf(class int32) []int32 {
	if ps, ok := pr.cidrPeers[class]; ok {
		return ps
	}
	atoms := pr.cidr.classes[class]
	var out []int32
	for id, def := range pr.peers {
		if def != nil && len(def.atoms) > 0 && intersects(def.atoms, atoms) {
			out = append(out, int32(id))
		}
	}
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

func (pr *program) indexPolicies() {
	for i, cp := range pr.pols {
		s := cp.p.Subject
		if s.Segment != "" {
			seg := pr.segIndex[s.Segment]
			pr.segSubject[seg] = append(pr.segSubject[seg], int32(i))
			continue
		}
		pr.subjects.add(int32(i), matcher{nsOnly: cp.p.Namespace, nsm: s.Namespaces, sel: s.Workloads})
	}
}

func (pr *program) buildBuckets(protos map[int]bool) {
	pr.bucketProt = []int{-1}
	list := make([]int, 0, len(protos))
	for p := range protos {
		list = append(list, p)
	}
	sort.Ints(list)
	for _, p := range list {
		pr.bucketOf[p] = uint8(len(pr.bucketProt))
		pr.bucketProt = append(pr.bucketProt, p)
	}
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
