package decide_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/decide"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// readRules reads decision rules through the one way in for objects.
func readRules(t testing.TB, doc string) []*policy.DecisionRule {
	t.Helper()
	objs, errs := objects.Read("rules.yaml", []byte(doc))
	if len(errs) > 0 {
		t.Fatalf("read: %v", errs)
	}
	var out []*policy.DecisionRule
	for _, o := range objs {
		out = append(out, o.Set.DecisionRules...)
	}
	return out
}

func compile(t testing.TB, doc string, opts decide.Options) *decide.Engine {
	t.Helper()
	e, err := decide.Compile(readRules(t, doc), opts)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return e
}

func rule(name string, order int, spec string) string {
	return "---\napiVersion: bulkhead.dev/v1\nkind: DecisionRule\nmetadata: {name: " + name + "}\nspec:\n  order: " +
		strconv.Itoa(order) + "\n" + spec
}

var (
	web = decide.Endpoint{Workload: true, Namespace: "shop", Name: "web-0", Labels: map[string]string{"app": "web"},
		Identity: 7, Image: "sha256:aaa", Address: "10.0.0.2"}
	db = decide.Endpoint{Workload: true, Namespace: "shop", Name: "db-0", Labels: map[string]string{"app": "db"},
		Identity: 9, Image: "sha256:bbb", Address: "10.0.0.5"}
	outside  = decide.Endpoint{Address: "203.0.113.7"}
	askDB    = decide.Escalation{Rules: []decide.RuleRef{{Namespace: "shop", Policy: "db", Rule: "ask"}}}
	zurich   = mustZone("Europe/Zurich")
	winterAM = time.Date(2026, 12, 2, 9, 30, 0, 0, zurich) // a Wednesday
)

func mustZone(name string) *time.Location {
	l, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return l
}

func req(at time.Time, src, dst decide.Endpoint, esc decide.Escalation) decide.Request {
	return decide.Request{Time: at, Source: src, Destination: dst, Port: 5432, Protocol: policy.TCP, Escalation: esc}
}

func TestDecide(t *testing.T) {
	officeHours := rule("office-hours", 10, `  timeZone: Europe/Zurich
  condition: now.weekday >= 1 && now.weekday <= 5 && now.hour >= 8 && now.hour < 18
  outcome: allow
  remember: 1h
`) + rule("after-hours", 20, `  outcome: deny
`)
	tests := []struct {
		name  string
		rules string
		req   decide.Request
		want  decide.Decision
	}{
		{"time: office hours allow, remembered", officeHours, req(winterAM, web, db, askDB),
			decide.Decision{Outcome: decide.Allow, Rule: "office-hours", Reason: "rule office-hours (order 10)", Remember: time.Hour}},
		{"time: evening goes on to the next rule", officeHours, req(winterAM.Add(10*time.Hour), web, db, askDB),
			decide.Decision{Outcome: decide.Deny, Rule: "after-hours", Reason: "rule after-hours (order 20)"}},
		{"time: a Saturday", officeHours, req(winterAM.AddDate(0, 0, 3), web, db, askDB),
			decide.Decision{Outcome: decide.Deny, Rule: "after-hours", Reason: "rule after-hours (order 20)"}},
		{"order: lower first, whatever the document order", rule("b", 200, "  outcome: deny\n") + rule("a", 100, "  outcome: allow\n"),
			req(winterAM, web, db, askDB), decide.Decision{Outcome: decide.Allow, Rule: "a", Reason: "rule a (order 100)"}},
		{"hold: an operator decides, with the rule's timeout", rule("ask", 1, "  outcome: hold\n  holdTimeout: 10m\n  onTimeout: allow\n"),
			req(winterAM, web, db, askDB), decide.Decision{Outcome: decide.Hold, Rule: "ask", Reason: "rule ask (order 1)", HoldTimeout: 10 * time.Minute, OnTimeout: decide.Allow}},
		{"no rule matched: the default holds, then denies", rule("other", 1, "  escalations: {rules: [{namespace: lab, policy: x}]}\n  outcome: allow\n"),
			req(winterAM, web, db, askDB), decide.Decision{Outcome: decide.Hold, Reason: decide.NoRuleMatched, HoldTimeout: decide.DefaultHoldTimeout, OnTimeout: decide.Deny}},
		{"quarantine: deny and record the source", rule("image", 1, `  condition: source.image != "sha256:good"
  outcome: quarantine
`), req(winterAM, web, db, askDB), decide.Decision{Outcome: decide.Quarantine, Rule: "image", Reason: "rule image (order 1)"}},
		{"scope: every reason must be covered", rule("db-only", 1, "  escalations: {rules: [{namespace: shop, policy: db}]}\n  outcome: allow\n"),
			req(winterAM, web, db, decide.Escalation{Rules: []decide.RuleRef{{Namespace: "shop", Policy: "db", Rule: "ask"}, {Namespace: "shop", Policy: "web", Rule: "out"}}}),
			decide.Decision{Outcome: decide.Hold, Reason: decide.NoRuleMatched, HoldTimeout: decide.DefaultHoldTimeout, OnTimeout: decide.Deny}},
		{"scope: conflict class and destination address", rule("cc", 1, "  escalations: {conflictClasses: [payments], to: {cidrs: [{cidr: 10.0.0.0/24}]}}\n  outcome: allow\n"),
			req(winterAM, web, db, decide.Escalation{ConflictClass: "payments", Dataset: "cards"}),
			decide.Decision{Outcome: decide.Allow, Rule: "cc", Reason: "rule cc (order 1)"}},
		{"scope: from a selector does not choose an outside address", rule("web", 1, "  escalations: {from: {selector: {matchLabels: {app: web}}}}\n  outcome: allow\n") + rule("rest", 2, "  outcome: deny\n"),
			req(winterAM, outside, db, askDB), decide.Decision{Outcome: decide.Deny, Rule: "rest", Reason: "rule rest (order 2)"}},
		{"scope: a namespace by its name label", rule("ns", 1, "  escalations: {from: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}}}\n  outcome: allow\n"),
			req(winterAM, web, db, askDB), decide.Decision{Outcome: decide.Allow, Rule: "ns", Reason: "rule ns (order 1)"}},
		{"history: a binding to the other dataset denies", rule("wall", 1, `  condition: '"payments" in history.bindings && history.bindings["payments"] != escalation.dataset'
  outcome: deny
`) + rule("rest", 2, "  outcome: allow\n"),
			func() decide.Request {
				r := req(winterAM, web, db, decide.Escalation{ConflictClass: "payments", Dataset: "ledger"})
				r.History.Bindings = map[string]string{"payments": "cards"}
				return r
			}(), decide.Decision{Outcome: decide.Deny, Rule: "wall", Reason: "rule wall (order 1)"}},
		{"labels, port and protocol", rule("pg", 1, `  condition: destination.labels.?app.orValue("") == "db" && port == 5432 && protocol == "tcp" && source.identity == 7
  outcome: allow
`), req(winterAM, web, db, askDB), decide.Decision{Outcome: decide.Allow, Rule: "pg", Reason: "rule pg (order 1)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := compile(t, tc.rules, decide.Options{})
			if got := e.Decide(tc.req); got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// A condition that fails at run time denies, named, never remembered.
func TestFailedConditionDenies(t *testing.T) {
	e := compile(t, rule("team", 1, "  condition: source.labels[\"team\"] == \"a\"\n  outcome: allow\n  remember: 1h\n"), decide.Options{})
	d := e.Decide(req(winterAM, web, db, askDB))
	if d.Outcome != decide.Deny || !d.Failed || d.Remember != 0 || d.Rule != "team" || !strings.Contains(d.Reason, "no such key") {
		t.Errorf("got %+v, want a failed deny by rule team", d)
	}
}

// rate() decides automatically: a source that escalates more than three
// times in ten seconds is denied until it calms down; another is not.
func TestRateDecides(t *testing.T) {
	rates := decide.NewRates(0)
	e := compile(t, rule("flood", 1, "  condition: rate(duration(\"10s\")) > 3\n  outcome: deny\n")+
		rule("rest", 2, "  outcome: allow\n"), decide.Options{Rates: rates})
	var got []decide.Outcome
	for i := range 5 {
		got = append(got, e.Decide(req(winterAM.Add(time.Duration(i)*time.Second), web, db, askDB)).Outcome)
	}
	got = append(got, e.Decide(req(winterAM.Add(5*time.Second), db, web, askDB)).Outcome)
	got = append(got, e.Decide(req(winterAM.Add(30*time.Second), web, db, askDB)).Outcome)
	want := []decide.Outcome{decide.Allow, decide.Allow, decide.Allow, decide.Deny, decide.Deny, decide.Allow, decide.Allow}
	if strings.Join(outcomes(got), " ") != strings.Join(outcomes(want), " ") {
		t.Errorf("outcomes %v, want %v", got, want)
	}
	// A new rule set keeps the counts of the tracker it shares.
	e2 := compile(t, rule("flood2", 1, "  condition: rate(duration(\"1m\")) >= 7\n  outcome: deny\n"), decide.Options{Rates: rates})
	if d := e2.Decide(req(winterAM.Add(31*time.Second), web, db, askDB)); d.Outcome != decide.Deny {
		t.Errorf("after a new rule set: %+v, want deny (7 escalations in the minute)", d)
	}
}

func outcomes(os []decide.Outcome) []string {
	var s []string
	for _, o := range os {
		s = append(s, string(o))
	}
	return s
}

// A condition cannot stall the manager: its cost is bounded, and beyond
// the bound it denies, quickly.
func TestCostLimit(t *testing.T) {
	e := compile(t, rule("quadratic", 1, `  condition: history.decisions.all(a, history.decisions.all(b, a.port == b.port))
  outcome: allow
`), decide.Options{})
	r := req(winterAM, web, db, askDB)
	for i := range 2000 {
		r.History.Decisions = append(r.History.Decisions, decide.PastDecision{Outcome: "allow", Port: 5432, At: winterAM.Add(-time.Duration(i) * time.Minute)})
	}
	start := time.Now()
	d := e.Decide(r)
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Errorf("a condition over its cost limit took %s", took)
	}
	if d.Outcome != decide.Deny || !d.Failed || !strings.Contains(d.Reason, "cost limit") {
		t.Errorf("got %+v, want a failed deny over the cost limit", d)
	}
}

// A remembered decision is reused for the same source identity,
// destination and port: another workload of the identity shares it.
func TestRememberKey(t *testing.T) {
	a, b := req(winterAM, web, db, askDB), req(winterAM, web, db, askDB)
	b.Source.Name = "web-1" // same labels, same identity
	if a.RememberKey() != b.RememberKey() {
		t.Errorf("two workloads of one identity: %+v and %+v", a.RememberKey(), b.RememberKey())
	}
	c := req(winterAM, web, db, askDB)
	c.Port = 5433
	o := req(winterAM, outside, db, askDB)
	if a.RememberKey() == c.RememberKey() || a.RememberKey() == o.RememberKey() || o.RememberKey().Source != "203.0.113.7" {
		t.Errorf("keys of another port or an outside source must differ: %+v %+v %+v", a.RememberKey(), c.RememberKey(), o.RememberKey())
	}
}
