package decide_test

import (
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/decide"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// A bad rule is refused where it is read, with the position of its
// expression in the document, CEL's position inside it and CEL's reason;
// one bad rule refuses its whole document.
func TestTypeErrorsWithPositions(t *testing.T) {
	good := rule("good", 1, "  outcome: allow\n")
	tests := []struct {
		name, spec string
		want       []string
	}{
		{"undeclared variable", "  condition: sorce.labels[\"app\"] == \"web\"\n  outcome: allow\n",
			[]string{"rules.yaml:14:14: spec.condition: CEL 1:1: undeclared reference to 'sorce'"}},
		{"no such field", "  condition: |\n    source.namespace == \"shop\" &&\n      source.lables[\"app\"] == \"web\"\n  outcome: allow\n",
			[]string{"rules.yaml:14:14: spec.condition: CEL 2:9: undefined field 'lables'"}},
		{"wrong types", "  condition: 'port == \"5432\"'\n  outcome: allow\n",
			[]string{"rules.yaml:14:14: spec.condition: CEL 1:6: found no matching overload for '_==_' applied to '(int, string)'"}},
		{"not a bool", "  condition: port + 1\n  outcome: allow\n",
			[]string{"rules.yaml:14:14: spec.condition: the condition is of type int; it must be a bool"}},
		{"syntax", "  condition: now.hour >\n  outcome: allow\n",
			[]string{"rules.yaml:14:14: spec.condition: CEL 1:11: Syntax error"}},
		{"rate window out of range", "  condition: rate(duration(\"2h\")) > 5\n  outcome: deny\n",
			[]string{"rules.yaml:14:14: spec.condition: CEL 1:5: rate(2h0m0s): the window must be from 1s to 1h0m0s"}},
		{"bad regular expression", "  condition: source.name.matches(\"(\")\n  outcome: allow\n",
			[]string{"rules.yaml:14:14: spec.condition: CEL: error parsing regexp: missing closing ): `(`"}},
		{"time zone", "  timeZone: Mars/Olympus\n  outcome: allow\n",
			[]string{`rules.yaml:9:1: spec.timeZone: unknown time zone "Mars/Olympus"`}},
		{"hold fields without hold", "  outcome: deny\n  holdTimeout: 5m\n",
			[]string{"rules.yaml:9:1: spec.holdTimeout: holdTimeout and onTimeout are for outcome hold"}},
		{"outcome", "  outcome: maybe\n", []string{`rules.yaml:9:1: spec.outcome: unknown outcome "maybe"; valid: allow, deny, hold, quarantine`}},
		{"remember", "  outcome: allow\n  remember: forever\n", []string{`rules.yaml:9:1: spec.remember: invalid duration "forever"`}},
		{"unknown field", "  outcome: allow\n  remeber: 1h\n", []string{`rules.yaml:15:3: spec.remeber: unknown field "remeber"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs, errs := objects.Read("rules.yaml", []byte(good+rule("bad", 2, tc.spec)))
			if len(objs) != 0 {
				t.Errorf("read %d objects of a document with a bad rule; want none", len(objs))
			}
			got := errs.Error()
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("errors\n  %s\nwant one with\n  %s", got, w)
				}
			}
		})
	}
}

// Compile refuses a whole set for one problem: two rules of one order.
func TestCompileRefusesTheWholeSet(t *testing.T) {
	rules := readRules(t, rule("a", 5, "  outcome: allow\n")+rule("b", 5, "  outcome: deny\n"))
	e, err := decide.Compile(rules, decide.Options{})
	if e != nil || err == nil || !strings.Contains(err.Error(), `spec.order: order 5 is also decision rule "a"'s`) {
		t.Fatalf("Compile = %v, %v; want no engine and the order named", e, err)
	}
	// Rules that did not come through the decoder are checked too.
	bad := &policy.DecisionRule{Name: "x", Order: 1, Outcome: decide.Allow, Condition: "nope(", ConditionPos: policy.Pos{File: "api", Line: 3, Column: 7}}
	if _, err := decide.Compile([]*policy.DecisionRule{rules[0], bad}, decide.Options{}); err == nil || !strings.HasPrefix(err.Error(), "api:3:7: spec.condition: CEL 1:") {
		t.Errorf("Compile of a bad condition: %v", err)
	}
}
