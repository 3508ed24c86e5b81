package nft

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// elemStore plays a transaction's element operations as the kernel
// would: deletions before additions, the preparatory transaction first;
// deleting a missing element is an error (ENOENT).
type elemStore map[string]map[string]string

func (s elemStore) play(t *testing.T, x *tx) {
	t.Helper()
	for _, part := range []*tx{x.pre, x} {
		if part == nil {
			continue
		}
		for set, els := range part.dels {
			for _, e := range els {
				if _, ok := s[set][string(e.Key)]; !ok {
					t.Errorf("delete of %s element %x, which is not there", set, e.Key)
				}
				delete(s[set], string(e.Key))
			}
		}
		for set, els := range part.adds {
			if s[set] == nil {
				s[set] = map[string]string{}
			}
			for _, e := range els {
				s[set][string(e.Key)] = string(e.Val)
			}
		}
	}
}

// checkNamed fails unless every identity of st holds, in s, the element of
// each attribute whose value a key of st names, with that value.
func checkNamed(t *testing.T, step string, m *model, s elemStore, st *compile.State) {
	t.Helper()
	d := compile.Diff(nil, st)
	named := map[[2]uint32]bool{}
	for dir := range d.Tables {
		for _, c := range d.Tables[dir] {
			if i, v, ok := attrOf(policy.Direction(dir), c.Key); ok {
				named[[2]uint32{uint32(i), v}] = true
			}
		}
	}
	for _, c := range d.Guards {
		named[[2]uint32{0, uint32(c.Key[0])}], named[[2]uint32{0, uint32(c.Key[1])}] = true, true
	}
	st.EachIdentity(func(id compile.IdentityID, a compile.IdentityAttrs) {
		for i, v := range attrValues(a) {
			if !named[[2]uint32{uint32(i), v}] {
				continue
			}
			if got, ok := s[m.b.n(attrSet(i))][string(u32(uint32(id)))]; !ok || got != string(u32(v)) {
				t.Errorf("%s: identity %d: %s element %x (present %v), want %08x, which a key names", step, id, attrSet(i), got, ok, v)
			}
		}
	})
}

// An identity's attribute element is written only when a key names its
// value; when a value that identities hold unwritten becomes named (a
// local workload comes, and with it the table entries), their elements
// come in the same Apply.
func TestNamedAttributes(t *testing.T) {
	c, set := unitCompiler(t, unitPolicy)
	// b (the policy's subject) starts elsewhere: no table entry names a's class.
	b := *set.Workloads[1]
	b.Host = "h2"
	if err := c.UpsertWorkload(&b); err != nil {
		t.Fatal(err)
	}
	m, s := testModel(), elemStore{}
	tx := newTx(table())
	m.create(tx, dataplane.Desired{State: c.State()})
	m.sweep(tx)
	s.play(t, tx)
	checkNamed(t, "b elsewhere", m, s, c.State())
	all := 0
	c.State().EachIdentity(func(compile.IdentityID, compile.IdentityAttrs) { all += numAttrs })
	if n := tx.pre.elements() - len(tx.pre.adds[m.b.n(setBuckets)]); n >= all {
		t.Errorf("a generation with no table entry wrote %d elements, want fewer than the %d attribute elements alone", n, all)
	}
	steps := []struct {
		name string
		do   func() error
	}{
		{"a replica elsewhere", func() error {
			return c.UpsertWorkload(&policy.Workload{Namespace: "app", Name: "a2", Labels: map[string]string{"app": "a"}, Host: "h3",
				IPs: []netip.Addr{netip.MustParseAddr("10.9.1.1")}})
		}},
		{"b comes to this host", func() error { b.Host = "h1"; return c.UpsertWorkload(&b) }},
		{"b goes", func() error { b.Host = "h2"; return c.UpsertWorkload(&b) }},
		{"a replica goes", func() error { c.DeleteWorkload("app/a2"); return nil }},
		{"b back", func() error { b.Host = "h1"; return c.UpsertWorkload(&b) }},
		{"a third replica", func() error {
			return c.UpsertWorkload(&policy.Workload{Namespace: "app", Name: "a3", Labels: map[string]string{"app": "a"}, Host: "h3",
				IPs: []netip.Addr{netip.MustParseAddr("10.9.1.3")}})
		}},
	}
	for i, st := range steps {
		if err := st.do(); err != nil {
			t.Fatal(err)
		}
		tx := newTx(table())
		m.update(tx, dataplane.Desired{State: c.State()})
		m.sweep(tx)
		s.play(t, tx)
		checkNamed(t, fmt.Sprintf("step %d (%s)", i, st.name), m, s, c.State())
	}
}

// A table key that comes to name a class that identities already hold
// unwritten brings their elements into the same transaction.
func TestNamedAttributesWake(t *testing.T) {
	c, set := unitCompiler(t, unitPolicy)
	b := *set.Workloads[1]
	b.Host = "h2"
	if err := c.UpsertWorkload(&b); err != nil {
		t.Fatal(err)
	}
	st := c.State()
	m, s := testModel(), elemStore{}
	tx := newTx(table())
	m.create(tx, dataplane.Desired{State: st})
	s.play(t, tx)
	var id compile.IdentityID
	var a compile.IdentityAttrs
	st.EachIdentity(func(i compile.IdentityID, x compile.IdentityAttrs) { id, a = i, x })
	key := compile.TableKey{Level: 1, Class: a.Class[policy.Egress][1], Group: 1}
	i, v, _ := attrOf(policy.Egress, key)
	if _, ok := s[m.b.n(attrSet(i))][string(u32(uint32(id)))]; ok {
		t.Fatalf("identity %d: %s element written though no key names it", id, attrSet(i))
	}
	var tables [2][]compile.Change[compile.TableKey, compile.PortMap]
	tables[policy.Egress] = []compile.Change[compile.TableKey, compile.PortMap]{{Op: compile.Add, Key: key}}
	wake, any := m.attrs.nameValues(tables, nil)
	if !any {
		t.Fatalf("naming %08x woke nothing", v)
	}
	tx = newTx(table())
	m.wakeAttrs(tx, st, wake)
	s.play(t, tx)
	if got := s[m.b.n(attrSet(i))][string(u32(uint32(id)))]; got != string(u32(v)) {
		t.Errorf("identity %d: %s element %x after its value was named, want %08x", id, attrSet(i), got, v)
	}
	if n := m.attrs.unwritten[i][v]; n != 0 {
		t.Errorf("unwritten count of %08x = %d after the wake, want 0", v, n)
	}
}
