package decide_test

import (
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/decide"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// FuzzCondition: any expression is either refused when checked, or
// compiles and decides every request — within its cost limit, and never
// by a condition that failed unless the decision says so.
func FuzzCondition(f *testing.F) {
	for _, s := range []string{
		`now.hour >= 8 && rate(duration("1m")) < 10`,
		`history.decisions.all(a, history.decisions.all(b, a.port == b.port))`,
		`source.labels.?team.orValue("") == "a" || "x" in history.bindings`,
		`[1,2,3].map(x, [x, x].map(y, y * x)).size() > 2`,
		`source.name.matches("^(a+)+$") && destination.address.startsWith("10.")`,
		`rate(duration("0s")) > 1`, `port / 0 == 1`, `"a".repeat(100000).size() > 0`,
	} {
		f.Add(s)
	}
	r := req(winterAM, web, db, askDB)
	for i := range 200 {
		r.History.Decisions = append(r.History.Decisions, decide.PastDecision{Outcome: "allow", Port: i})
	}
	r.History.Bindings = map[string]string{"x": "y"}
	f.Fuzz(func(t *testing.T, expr string) {
		rule := &policy.DecisionRule{Name: "f", Order: 1, Outcome: decide.Allow, Condition: expr, Remember: time.Minute}
		checked := time.Now()
		errs := decide.Check(rule)
		if took := time.Since(checked); took > time.Second {
			t.Fatalf("%q took %s to check", expr, took)
		}
		if len(errs) > 0 {
			return
		}
		e, err := decide.Compile([]*policy.DecisionRule{rule}, decide.Options{})
		if err != nil {
			t.Fatalf("checked, but Compile refuses %q: %v", expr, err)
		}
		start := time.Now()
		d := e.Decide(r)
		if took := time.Since(start); took > time.Second {
			t.Fatalf("%q took %s to decide", expr, took)
		}
		switch {
		case d.Failed && (d.Outcome != decide.Deny || d.Remember != 0):
			t.Fatalf("%q failed but decided %+v", expr, d)
		case !d.Failed && d.Outcome == decide.Allow && d.Remember != time.Minute:
			t.Fatalf("%q: %+v", expr, d)
		}
	})
}

// Decide is safe for concurrent use, with one Rates shared by engines.
func TestConcurrentDecide(t *testing.T) {
	rates := decide.NewRates(50)
	e := compile(t, rule("r", 1, "  condition: rate(duration(\"1m\")) > 1000\n  outcome: deny\n")+rule("a", 2, "  outcome: allow\n"), decide.Options{Rates: rates})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := web
			for i := range 500 {
				src.Name = "w" + string(rune('a'+g)) + string(rune('a'+i%26))
				if d := e.Decide(req(winterAM.Add(time.Duration(i)*time.Millisecond), src, db, askDB)); d.Outcome != decide.Allow {
					t.Errorf("decision %+v", d)
					return
				}
			}
		}()
	}
	wg.Wait()
	if rates.Len() > 50 {
		t.Errorf("Rates keeps %d sources, over its bound of 50", rates.Len())
	}
}
