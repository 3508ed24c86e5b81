package compile

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// perturb changes the k-th leaf field reachable from v (in a fixed walk
// order) and reports whether there was one; a map gets one more key.
func perturb(v reflect.Value, k *int) bool {
	if v.Type() == reflect.TypeFor[netip.Prefix]() {
		if *k == 0 {
			v.Set(reflect.ValueOf(netip.MustParsePrefix("203.0.113.0/24")))
			return true
		}
		*k--
		return false
	}
	switch v.Kind() {
	case reflect.Pointer:
		return !v.IsNil() && perturb(v.Elem(), k)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if perturb(v.Field(i), k) {
				return true
			}
		}
		return false
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			if perturb(v.Index(i), k) {
				return true
			}
		}
		return false
	}
	if *k > 0 {
		*k--
		return false
	}
	switch v.Kind() {
	case reflect.Map:
		v.SetMapIndex(reflect.ValueOf("zz"), reflect.ValueOf("zz"))
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Int, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Uint8:
		v.SetUint(v.Uint() + 1)
	default:
		panic("perturb: kind " + v.Kind().String())
	}
	return true
}

// checkEveryField changes each leaf of a copy of a fully populated object
// in turn and requires same to notice; fresh makes a new copy each time.
func checkEveryField[T any](t *testing.T, name string, fresh func() *T, same func(*T) bool) {
	t.Helper()
	if !same(fresh()) {
		t.Fatalf("%s: an unchanged copy compares unequal", name)
	}
	n := 0
	for ; ; n++ {
		c := fresh()
		k := n
		if !perturb(reflect.ValueOf(c), &k) {
			break
		}
		if same(c) {
			t.Errorf("%s: changing leaf %d goes unnoticed", name, n)
		}
	}
	if n < 5 {
		t.Fatalf("%s: only %d leaves", name, n)
	}
}

func intPtr(v int) *int { return &v }

func fullPolicy() *policy.Policy {
	sel := func() *policy.Selector {
		return &policy.Selector{MatchLabels: map[string]string{"a": "b"},
			MatchExpressions: []policy.Requirement{{Key: "k", Operator: "In", Values: []string{"v"}}}}
	}
	ns := func() policy.NamespaceMatch { return policy.NamespaceMatch{Names: []string{"n"}, Selector: sel()} }
	pos := policy.Pos{File: "f", Line: 1, Column: 2}
	rule := func() policy.Rule {
		return policy.Rule{ID: "id", Name: "n", Action: policy.Allow, Log: true, Pos: pos,
			Peers: []policy.Peer{{Any: true, Segment: "s", Namespaces: ns(), Workloads: sel(),
				CIDRs: []policy.CIDR{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Except: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}}}},
			Services: []policy.Service{{Protocol: policy.TCP, Port: 1, EndPort: 2, Name: "http", Type: intPtr(3), Code: intPtr(4)}}}
	}
	return &policy.Policy{Name: "p", Namespace: "ns", Kind: "Policy", Tier: policy.Application, Priority: 3,
		Mode: policy.Enforce, Isolate: [2]bool{true, false}, Pos: pos,
		Subject: policy.Subject{Namespaces: ns(), Workloads: sel(), Segment: "s"},
		Ingress: []policy.Rule{rule()}, Egress: []policy.Rule{rule()}}
}

func TestPolicyEqualSeesEveryField(t *testing.T) {
	// The snapshot is made from the object changed: it must be deep.
	var s snapshot
	checkEveryField(t, "policy", func() *policy.Policy { p := fullPolicy(); s = snapshotOf(p); return p },
		func(p *policy.Policy) bool { return s.equal(p) })
}

func TestInventorySeesEveryField(t *testing.T) {
	pos := policy.Pos{File: "f", Line: 1, Column: 2}
	sel := &policy.Selector{MatchLabels: map[string]string{"a": "b"},
		MatchExpressions: []policy.Requirement{{Key: "k", Operator: "In", Values: []string{"v"}}}}
	set := func() *policy.Set {
		return &policy.Set{
			Namespaces: []*policy.Namespace{{Name: "n", Labels: map[string]string{"a": "b"}, Pos: pos}},
			Segments: []*policy.Segment{{Name: "s", Pos: pos, Namespaces: policy.NamespaceMatch{Names: []string{"n"}, Selector: cloneSelector(sel)},
				Workloads: cloneSelector(sel), CIDRs: []policy.CIDR{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Except: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}}}},
			Walls:           []*policy.Wall{{Name: "w", Segments: []string{"s"}, Pos: pos}},
			ConflictClasses: []*policy.ConflictClass{{Name: "c", Subjects: "s", Scope: "session", Window: time.Hour, Pos: pos, Datasets: []policy.Dataset{{Name: "d", Segment: "s"}}}},
		}
	}
	// The copy is made from the object changed: the copy must be deep.
	var inv inventory
	checkEveryField(t, "inventory", func() *policy.Set { s := set(); inv = newInventory(s); return s },
		func(s *policy.Set) bool { return inv.same(s) })
}
