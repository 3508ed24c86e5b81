package nft

import (
	"maps"
	"slices"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Rule changes (an added rule, a renamed one, a log flag, a removed rule)
// rewrite only the outcomes naming them, and leave the model as a new
// generation of the same state would be: outcome renderings, the rule
// each counts into, and the rule counter elements.
func TestRuleChangesMatchNewGeneration(t *testing.T) {
	c, set := unitCompiler(t, unitPolicy)
	m := testModel()
	m.create(newTx(table()), dataplane.Desired{State: c.State()})
	p := set.Policies[0]
	first := p.Ingress[0]
	steps := []struct {
		name string
		edit func()
	}{
		{"add", func() {
			r := first
			r.ID, r.Services = "app/b-in/port-9", []policy.Service{{Protocol: policy.TCP, Port: 9}}
			p.Ingress = append(slices.Clone(p.Ingress), r)
		}},
		{"rename", func() { p.Ingress = slices.Clone(p.Ingress); p.Ingress[0].ID = "renamed" }},
		{"log off", func() { p.Ingress = slices.Clone(p.Ingress); p.Ingress[0].Log = false }},
		{"remove", func() { p.Ingress = p.Ingress[:1:1] }},
		{"back", func() { p.Ingress = []policy.Rule{first} }},
	}
	for _, s := range steps {
		s.edit()
		if err := c.SetPolicies(set); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		st := c.State()
		m.update(newTx(table()), dataplane.Desired{State: st})
		fresh := testModel()
		fresh.create(newTx(table()), dataplane.Desired{State: st})
		if !slices.Equal(m.outcomes, fresh.outcomes) || !slices.Equal(m.outRule, fresh.outRule) {
			t.Errorf("%s: outcomes %q rules %x, a new generation has %q %x", s.name, m.outcomes, m.outRule, fresh.outcomes, fresh.outRule)
		}
		if !maps.Equal(m.ruleOf, fresh.ruleOf) {
			t.Errorf("%s: rule counters %v, a new generation has %v", s.name, m.ruleOf, fresh.ruleOf)
		}
	}
}
