package compile

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// TestSharedPolicyEditsMatchFresh is TestPolicyEditsMatchFresh for a
// Compiler made by NewShared, whose caller replaces a changed policy by a
// new object and never edits one in place: every state must equal a fresh
// compile, and most edits must stay incremental.
func TestSharedPolicyEditsMatchFresh(t *testing.T) {
	edits, full := 0, 0
	for seed := int64(1); seed <= 30; seed++ {
		g := gen{rand.New(rand.NewSource(seed))}
		set := g.set(6+g.r.Intn(10), 1+g.r.Intn(10))
		host := ""
		if seed%3 == 0 {
			host = "h1"
		}
		c, err := NewShared(set, host, nil)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		for step := range 20 {
			pols := append([]*policy.Policy(nil), set.Policies...)
			var what string
			switch k := g.r.Intn(4); {
			case k < 2 && len(pols) > 0:
				i := g.r.Intn(len(pols))
				pols[i], what = g.editPolicy(pols[i])
			case k < 3:
				at := g.r.Intn(len(pols) + 1)
				pols = append(pols[:at:at], append([]*policy.Policy{g.policy(100+step, testSegs)}, pols[at:]...)...)
				what = "policy added"
			case len(pols) > 0:
				i := g.r.Intn(len(pols))
				pols = append(pols[:i:i], pols[i+1:]...)
				what = "policy removed"
			}
			set.Policies = pols
			before := c.fullCompiles
			if err := c.SetPolicies(set); err != nil {
				t.Fatalf("seed %d step %d (%s): %v", seed, step, what, err)
			}
			edits++
			full += c.fullCompiles - before
			st := c.State()
			t.Run(fmt.Sprintf("%d/%d", seed, step), func(t *testing.T) {
				t.Logf("host %q, %s", host, what)
				checkFresh(t, set, host, st)
			})
		}
	}
	if full*2 > edits {
		t.Errorf("%d of %d policy edits compiled in full; want most incremental", full, edits)
	}
}

// TestSharedKeepsNoCopy: a Compiler made by NewShared holds the caller's
// policies, not copies, and an unchanged pointer is an unchanged policy.
func TestSharedKeepsNoCopy(t *testing.T) {
	set := smallSet()
	c, err := NewShared(set, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, cp := range c.pr.order {
		if cp.p != set.Policies[i] {
			t.Fatalf("policy %d: the compiler holds a copy", i)
		}
	}
	before := c.fullCompiles
	if err := c.SetPolicies(&policy.Set{Namespaces: set.Namespaces, Segments: set.Segments, Walls: set.Walls,
		ConflictClasses: set.ConflictClasses, Workloads: set.Workloads, Policies: append([]*policy.Policy(nil), set.Policies...)}); err != nil {
		t.Fatal(err)
	}
	if c.fullCompiles != before {
		t.Fatal("the same policies compiled in full")
	}
}
