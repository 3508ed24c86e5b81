package nft

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/load"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func TestKeyEncoding(t *testing.T) {
	cases := []struct {
		name      string
		got, want []byte
	}{
		{"tab key: class word (level above the class) . group word (group << 8 | bucket)",
			tabKey(compile.TableKey{Class: 0x01020304, Group: 5, Bucket: 6, Level: 2}),
			[]byte{0x21, 2, 3, 4, 0, 0, 5, 6}},
		{"wildcard tab key", tabKey(compile.TableKey{Group: 5, Level: wildcardLevel}), []byte{0x30, 0, 0, 0, 0, 0, 5, 0}},
		{"port key (port padded to 4 bytes)", portKey(7, 8080), []byte{0, 0, 0, 7, 0x1f, 0x90, 0, 0}},
		{"guard key", guardKey([2]compile.GuardID{1, 2}), []byte{0, 0, 0, 1, 0, 0, 0, 2}},
		{"v4-mapped address is v4", addrKey(netip.MustParseAddr("::ffff:10.1.2.3")), []byte{10, 1, 2, 3}},
		{"own key", ownKey("bh1", netip.MustParseAddr("10.0.0.1")),
			append([]byte("bh1\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"), 10, 0, 0, 1)},
		{"rule key of no rule", ruleKey(""), []byte{0x80, 0, 0, 0}},
	}
	for _, c := range cases {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%s = %x, want %x", c.name, c.got, c.want)
		}
	}
	var a compile.IdentityAttrs
	a.Guard = 9
	a.Class[policy.Ingress] = [3]compile.ClassID{1, 2, 3}
	a.Class[policy.Egress] = [3]compile.ClassID{4, 5, 6}
	v := attrValues(a)
	if v[0] != 9 {
		t.Errorf("guard word = %d, want 9", v[0])
	}
	// The rules look the class of (direction, level) up in classSet(d, level).
	for d, classes := range a.Class {
		for l, cl := range classes {
			i := 1 + d*compile.NumLevels + l
			if attrSet(i) != classSet(policy.Direction(d), l) {
				t.Errorf("class %d/%d: map %s, but its word is at %s", d, l, classSet(policy.Direction(d), l), attrSet(i))
			}
			if v[i] != classWord(cl, l) {
				t.Errorf("class %d/%d: word %x, want %x", d, l, v[i], classWord(cl, l))
			}
		}
	}
}

// A rule key always has the top bit, which no group word has: the two
// share carrier C.
func TestRuleKeyNeverAGroupWord(t *testing.T) {
	for _, id := range []string{"", "a", "Policy/app/b-in/ingress/web"} {
		if k := ruleKey(id); k[0]&0x80 == 0 {
			t.Errorf("ruleKey(%q) = %x lacks the top bit", id, k)
		}
	}
	if g := groupWord(maxGroup) | 0xff; g&ruleKeyBit != 0 {
		t.Errorf("group word %x has the rule key bit", g)
	}
}

func TestChunks(t *testing.T) {
	var els []nftables.SetElement
	for i := range 2500 {
		els = append(els, nftables.SetElement{Key: make([]byte, 4+i%40), Val: make([]byte, 28)})
	}
	n := 0
	for _, c := range chunks(els) {
		size := 0
		for _, e := range c {
			size += elemSize(e)
		}
		if len(c) > maxChunkElems || size > maxChunkBytes {
			t.Errorf("chunk of %d elements, %d bytes: over the bound", len(c), size)
		}
		n += len(c)
	}
	if n != len(els) {
		t.Errorf("chunks hold %d elements, want %d", n, len(els))
	}
}

func TestLogPrefix(t *testing.T) {
	short := "Policy/app/b/ingress/web"
	long := strings.Repeat("x", 200)
	for _, c := range []struct{ kind, id, wantID string }{
		{LogAllow, short, short},
		{LogWouldDeny, long, "#" + RuleTag(long)},
		{LogSpoofed, "", ""},
	} {
		p := LogPrefix(c.kind, c.id)
		if len(p) > logPrefixMax {
			t.Errorf("prefix %q longer than %d", p, logPrefixMax)
		}
		kind, id, ok := ParseLogPrefix(p + "\x00")
		if !ok || kind != c.kind || id != c.wantID {
			t.Errorf("ParseLogPrefix(%q) = %q %q %v, want %q %q", p, kind, id, ok, c.kind, c.wantID)
		}
	}
	if _, _, ok := ParseLogPrefix("other"); ok {
		t.Errorf("a foreign prefix parsed")
	}
}

func TestGenNames(t *testing.T) {
	for _, c := range []struct {
		name string
		gen  int
	}{{genName("decide", 3), 3}, {genName("d4xr", 12), 12}, {"forward", -1}, {setRuleCounters, -1}, {"x_gzz", -1}} {
		if g := genOf(c.name); g != c.gen {
			t.Errorf("genOf(%q) = %d, want %d", c.name, g, c.gen)
		}
	}
	if baseName(genName(setTabI, 7)) != setTabI {
		t.Errorf("baseName does not undo genName")
	}
}

const unitPolicy = `
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: bulkhead.dev/v1
kind: Workload
metadata: {name: a, namespace: app, labels: {app: a}}
spec: {host: h1, ips: [10.9.0.1]}
---
apiVersion: bulkhead.dev/v1
kind: Workload
metadata: {name: b, namespace: app, labels: {app: b}}
spec: {host: h1, ips: [10.9.0.2, "fd09::2"]}
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: b-in, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: b}}}
  isolate: [ingress]
  ingress:
    - {name: web, action: allow, from: [{selector: {matchLabels: {app: a}}}], services: [{protocol: tcp, port: 8080}], log: true}
`

func unitCompiler(t *testing.T, doc string) (*compile.Compiler, *policy.Set) {
	t.Helper()
	set, errs := load.Bytes("unit.yaml", []byte(doc))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	c, err := compile.New(set, "h1", nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, set
}

func testModel() *model { return newModel(&builder{gen: 1, logRate: 10, mark: DefaultEscalateMark}) }

// A whole generation goes into the preparatory transaction: nothing
// refers to it until the base chains switch.
func TestCreateIsPreparatory(t *testing.T) {
	c, _ := unitCompiler(t, unitPolicy)
	m := testModel()
	tx := newTx(table())
	m.create(tx, dataplane.Desired{State: c.State()})
	if !tx.empty() {
		t.Errorf("the switch transaction of a new generation holds %s, want nothing yet", tx)
	}
	if got := len(tx.pre.adds[m.b.n(setAddr4)]); got != 2 {
		t.Errorf("addr4 elements = %d, want 2", got)
	}
	if got := len(tx.pre.adds[m.b.n(setAddr6)]); got != 1 {
		t.Errorf("addr6 elements = %d, want 1", got)
	}
	if got := len(tx.pre.adds[m.b.n(setBuckets)]); got != 256 {
		t.Errorf("bucket elements = %d, want all 256", got)
	}
	if got := len(tx.pre.adds[m.b.n(setGroupI)]); got != 1 {
		t.Errorf("group_i elements = %d, want 1 (b)", got)
	}
}

// A workload elsewhere costs one address element in the switch
// transaction; deleting it removes that element.
func TestDeltaOneWorkload(t *testing.T) {
	c, _ := unitCompiler(t, unitPolicy)
	m := testModel()
	m.create(newTx(table()), dataplane.Desired{State: c.State()})
	w := &policy.Workload{Namespace: "app", Name: "a2", Labels: map[string]string{"app": "a"}, Host: "h2",
		IPs: []netip.Addr{netip.MustParseAddr("10.9.1.1")}}
	if err := c.UpsertWorkload(w); err != nil {
		t.Fatal(err)
	}
	tx := newTx(table())
	m.update(tx, dataplane.Desired{State: c.State()})
	if !tx.pre.empty() || tx.elements() != 1 || len(tx.adds[m.b.n(setAddr4)]) != 1 {
		t.Fatalf("upsert of a remote replica: prepare %s; switch %s; want one address added", tx.pre, tx)
	}
	c.DeleteWorkload("app/a2")
	tx = newTx(table())
	m.update(tx, dataplane.Desired{State: c.State()})
	if tx.elements() != 1 || len(tx.dels[m.b.n(setAddr4)]) != 1 {
		t.Fatalf("delete: switch %s, want one address deleted", tx)
	}
}

// A policy change adds to the interval map only in the preparatory
// transaction and never deletes from it (deleting costs in proportion to
// its size): released port maps become garbage, and enough garbage asks
// for a new generation.
func TestDeltaPolicyChange(t *testing.T) {
	c, set := unitCompiler(t, unitPolicy)
	m := testModel()
	m.create(newTx(table()), dataplane.Desired{State: c.State()})
	seen := map[string]bool{}
	for round := range 4 {
		set.Policies[0].Ingress[0].Services[0].Port = 9000 + round
		if err := c.SetPolicies(set); err != nil {
			t.Fatal(err)
		}
		tx := newTx(table())
		garbage := m.pms.garbage
		m.update(tx, dataplane.Desired{State: c.State()})
		if n := len(tx.adds[m.b.n(setPorts)]) + len(tx.dels[m.b.n(setPorts)]) + len(tx.pre.dels[m.b.n(setPorts)]); n != 0 {
			t.Errorf("round %d: %d interval-map operations besides preparatory additions, want 0", round, n)
		}
		if len(tx.pre.adds[m.b.n(setPorts)]) == 0 || m.pms.garbage <= garbage {
			t.Errorf("round %d: want new port ranges prepared and old ones left as garbage; prepare %s, switch %s, garbage %d",
				round, tx.pre, tx, m.pms.garbage)
		}
		for _, e := range tx.pre.adds[m.b.n(setPorts)] {
			k := fmt.Sprintf("%x", e.Key[:4])
			if seen[k] {
				t.Errorf("round %d: port map id %s reused", round, k)
			}
			seen[k] = true
		}
	}
	m.pms.garbage = gcMin + 1
	if !m.pms.needsCompaction() {
		t.Errorf("garbage %d over live %d: want a compaction", m.pms.garbage, m.pms.live)
	}
}

// send writes a transaction in the order the kernel needs.
func TestSendOrder(t *testing.T) {
	tx := newBareTx(table())
	tx.counters = []string{"c"}
	tx.chains = []string{"ch"}
	tx.sets = []*nftables.Set{{Table: table(), Name: "s", KeyType: typeU32}}
	tx.addRules("ch", true, nil)
	tx.add("s", nftables.SetElement{Key: u32(1)})
	tx.del("s", nftables.SetElement{Key: u32(1)})
	tx.sweepRules = []string{"old"}
	tx.delSets = []string{"olds"}
	tx.delChains = []string{"old"}
	tx.delObjs = []string{"oldc"}
	r := &recorder{}
	if err := tx.send(r); err != nil {
		t.Fatal(err)
	}
	want := "obj+ c, chain+ ch, set+ s, flush ch, elem- s, elem+ s, flush old, set- olds, chain- old, obj- oldc"
	if got := strings.Join(r.ops, ", "); got != want {
		t.Errorf("send order:\n got %s\nwant %s", got, want)
	}
}

// recorder is a conn that records what it is asked to do.
type recorder struct{ ops []string }

func (r *recorder) rec(s string) { r.ops = append(r.ops, s) }

func (r *recorder) AddTable(t *nftables.Table) *nftables.Table { r.rec("table+ " + t.Name); return t }
func (r *recorder) AddChain(c *nftables.Chain) *nftables.Chain { r.rec("chain+ " + c.Name); return c }
func (r *recorder) DelChain(c *nftables.Chain)                 { r.rec("chain- " + c.Name) }
func (r *recorder) FlushChain(c *nftables.Chain)               { r.rec("flush " + c.Name) }
func (r *recorder) AddRule(x *nftables.Rule) *nftables.Rule    { r.rec("rule+ " + x.Chain.Name); return x }
func (r *recorder) AddSet(s *nftables.Set, _ []nftables.SetElement) error {
	r.rec("set+ " + s.Name)
	return nil
}
func (r *recorder) DelSet(s *nftables.Set)   { r.rec("set- " + s.Name) }
func (r *recorder) FlushSet(s *nftables.Set) { r.rec("setflush " + s.Name) }
func (r *recorder) SetAddElements(s *nftables.Set, _ []nftables.SetElement) error {
	r.rec("elem+ " + s.Name)
	return nil
}
func (r *recorder) SetDeleteElements(s *nftables.Set, _ []nftables.SetElement) error {
	r.rec("elem- " + s.Name)
	return nil
}
func (r *recorder) AddObj(o nftables.Obj) nftables.Obj {
	r.rec("obj+ " + o.(*nftables.CounterObj).Name)
	return o
}
func (r *recorder) DeleteObject(o nftables.Obj) { r.rec("obj- " + o.(*nftables.CounterObj).Name) }
func (r *recorder) Flush() error                { r.rec("flush"); return nil }

func TestRangeLines(t *testing.T) {
	el := func(a string, id uint32, end bool) element {
		e := element{key: addrKey(netip.MustParseAddr(a)), end: end}
		if !end {
			e.data = u32(id)
		}
		return e
	}
	got := rangeLines([]element{ // as the kernel lists them: any order
		el("10.0.0.0", 0, true), el("0.0.0.0", 1, false), el("10.0.0.0", 2, false), el("11.0.0.0", 0, true),
		el("11.0.0.0", 3, false),
	})
	want := []string{"0.0.0.0-9.255.255.255 : identity 1", "10.0.0.0-10.255.255.255 : identity 2",
		"11.0.0.0-255.255.255.255 : identity 3"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("rangeLines:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A number the carriers' words cannot hold is refused, never written
// wrapped into another class or group.
func TestNumbersBeyondTheWordsAreRefused(t *testing.T) {
	for _, a := range []compile.IdentityAttrs{
		{Workload: true, Class: [2][compile.NumLevels]compile.ClassID{{maxClass + 1}}},
		{Workload: true, Local: true, Group: [2]compile.GroupID{maxGroup + 1}},
	} {
		m := testModel()
		m.identityElems(newTx(table()), []compile.Change[compile.IdentityID, compile.IdentityAttrs]{{Op: compile.Add, Key: 1, New: a}})
		if m.err == nil {
			t.Errorf("attributes %+v: no error", a)
		}
	}
	m := testModel()
	m.identityElems(newTx(table()), []compile.Change[compile.IdentityID, compile.IdentityAttrs]{{Op: compile.Add, Key: 1,
		New: compile.IdentityAttrs{Workload: true, Local: true, Class: [2][compile.NumLevels]compile.ClassID{{maxClass}}, Group: [2]compile.GroupID{maxGroup}}}})
	if m.err != nil {
		t.Errorf("the largest numbers: %v", m.err)
	}
}

// Two rules whose ids have one home counter key (31 bits of a hash) get
// two keys: the second probes to the next free one, and each counter
// element names its rule, so that an agent adopting the table after a
// restart gives every rule the key it had, whatever the order it meets
// them in. The two names were found by search.
func TestCounterKeyCollisionProbed(t *testing.T) {
	id := func(n int) string { return fmt.Sprintf("Policy/app/b-in/ingress/r%d", n) }
	if !bytes.Equal(ruleKey(id(11501)), ruleKey(id(57304))) {
		t.Fatalf("the two ids no longer collide: %x %x", ruleKey(id(11501)), ruleKey(id(57304)))
	}
	rule := func(n, port int) string {
		return fmt.Sprintf("    - {name: r%d, action: allow, services: [{protocol: tcp, port: %d}]}\n", n, port)
	}
	keysOf := func(m *model, c *compile.Compiler) map[string]string {
		s, out := c.State(), map[string]string{}
		for i := 1; i < len(s.Outcomes); i++ {
			if rid := ruleID(s.Rules, s.Outcomes[i].Rule); rid != "" {
				if k, ok := out[rid]; ok && k != m.outRule[i] {
					t.Errorf("rule %s counts into %x and %x", rid, k, m.outRule[i])
				}
				out[rid] = m.outRule[i]
			}
		}
		return out
	}
	c, _ := unitCompiler(t, strings.Replace(unitPolicy, "    - {name: web,", rule(11501, 81)+rule(57304, 82)+"    - {name: web,", 1))
	m := testModel()
	tx := newTx(table())
	m.create(tx, dataplane.Desired{State: c.State()})
	keys := keysOf(m, c)
	if keys[id(11501)] == keys[id(57304)] || keys[id(11501)] == "" {
		t.Fatalf("colliding rules count into keys %x and %x, want two", keys[id(11501)], keys[id(57304)])
	}
	// A restart, and r11501 is gone: the counter elements (with their
	// comments) are adopted, and r57304 keeps its key, though its home key
	// is free now and still holds r11501's counts.
	var els []nftables.SetElement
	for _, e := range tx.pre.adds[setRuleCounters] {
		if e.Comment == "" && !bytes.Equal(e.Key, ruleKey("")) {
			t.Errorf("counter element %x names no rule", e.Key)
		}
		els = append(els, nftables.SetElement{Key: e.Key, Comment: e.Comment})
	}
	c2, _ := unitCompiler(t, strings.Replace(unitPolicy, "    - {name: web,", rule(57304, 82)+"    - {name: web,", 1))
	m2 := testModel()
	m2.adoptRuleCounters(els)
	m2.create(newTx(table()), dataplane.Desired{State: c2.State()})
	if got := keysOf(m2, c2)[id(57304)]; got != keys[id(57304)] {
		t.Errorf("after the restart %s counts into %x, before into %x", id(57304), got, keys[id(57304)])
	}
	// Without the elements' comments it would have taken its home key.
	m3 := testModel()
	m3.create(newTx(table()), dataplane.Desired{State: c2.State()})
	if got := keysOf(m3, c2)[id(57304)]; got != string(ruleKey(id(57304))) {
		t.Errorf("a fresh table: %s counts into %x, want its home key", id(57304), got)
	}
}
