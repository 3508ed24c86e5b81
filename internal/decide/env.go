package decide

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // zones resolve the same on every host

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/ext"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
)

// Limits on conditions.
const (
	// MaxConditionLength bounds a condition's length, in characters.
	MaxConditionLength = 4096
	// DefaultCostLimit bounds one evaluation of a condition, in CEL cost
	// units (about one per operation, and per element a comprehension or
	// string function touches): some tens of microseconds.
	DefaultCostLimit = 10_000
	// MaxRateWindow is the longest window rate() counts over.
	MaxRateWindow = time.Hour
)

var (
	envOnce sync.Once
	envVal  *cel.Env
	envErr  error
)

// env is the one CEL environment of conditions.
func env() (*cel.Env, error) {
	envOnce.Do(func() {
		envVal, envErr = cel.NewEnv(
			ext.NativeTypes(ext.ParseStructTags(true),
				reflect.TypeOf(Endpoint{}), reflect.TypeOf(RuleRef{}), reflect.TypeOf(Escalation{}),
				reflect.TypeOf(PastDecision{}), reflect.TypeOf(History{}), reflect.TypeOf(Now{})),
			cel.Variable("source", cel.ObjectType("decide.Endpoint")),
			cel.Variable("destination", cel.ObjectType("decide.Endpoint")),
			cel.Variable("port", cel.IntType),
			cel.Variable("protocol", cel.StringType),
			cel.Variable("now", cel.ObjectType("decide.Now")),
			cel.Variable("escalation", cel.ObjectType("decide.Escalation")),
			cel.Variable("history", cel.ObjectType("decide.History")),
			cel.Function("rate", cel.Overload("rate_duration", []*cel.Type{cel.DurationType}, cel.IntType, cel.LateFunctionBinding())),
			cel.OptionalTypes(),
			ext.Strings(),
			cel.ParserExpressionSizeLimit(MaxConditionLength),
		)
	})
	return envVal, envErr
}

// Check type-checks one rule as it is read: its condition (a bool CEL
// expression over the variables above, constant rate windows within
// MaxRateWindow) and its time zone. Errors are at the rule's positions,
// with CEL's own position inside the expression.
func Check(r *policy.DecisionRule) source.Errors {
	var errs source.Errors
	if _, err := location(r.TimeZone, nil); err != nil {
		errs.Add(r.Pos, "spec.timeZone", "%v", err)
	}
	if r.Condition != "" {
		_, cerrs := program(r.Condition, r.ConditionPos, DefaultCostLimit)
		errs = append(errs, cerrs...)
	}
	return errs
}

// programs caches the programs of good conditions: a rule is checked
// each time it is read (from a document, the store or the feed), and
// compiling one costs a few hundred microseconds. Programs are immutable
// and safe for concurrent use.
var programs struct {
	sync.Mutex
	m map[programKey]cel.Program
}

type programKey struct {
	expr      string
	costLimit uint64
}

const maxCachedPrograms = 4096

// program compiles expr into a program bounded by costLimit, reporting
// at pos. Constant arguments (a regular expression) are prepared here, so
// that a bad one is refused when the rule is read.
func program(expr string, pos source.Pos, costLimit uint64) (cel.Program, source.Errors) {
	key := programKey{expr, costLimit}
	programs.Lock()
	prg, ok := programs.m[key]
	programs.Unlock()
	if ok {
		return prg, nil
	}
	prg, errs := compileProgram(expr, pos, costLimit)
	if len(errs) == 0 {
		programs.Lock()
		if len(programs.m) >= maxCachedPrograms || programs.m == nil {
			programs.m = map[programKey]cel.Program{}
		}
		programs.m[key] = prg
		programs.Unlock()
	}
	return prg, errs
}

func compileProgram(expr string, pos source.Pos, costLimit uint64) (cel.Program, source.Errors) {
	var errs source.Errors
	if n := len([]rune(expr)); n > MaxConditionLength {
		errs.Add(pos, "spec.condition", "the condition is %d characters long; at most %d", n, MaxConditionLength)
		return nil, errs
	}
	e, err := env()
	if err != nil {
		errs.Add(pos, "spec.condition", "decide: internal error: CEL environment: %v", err)
		return nil, errs
	}
	a, iss := e.Compile(expr)
	if iss.Err() != nil {
		for _, ce := range iss.Errors() {
			loc := ce.Location
			errs.Add(pos, "spec.condition", "CEL %d:%d: %s", loc.Line(), loc.Column()+1, ce.Message)
		}
		return nil, errs
	}
	if !a.OutputType().IsExactType(cel.BoolType) {
		errs.Add(pos, "spec.condition", "the condition is of type %s; it must be a bool (true decides)", a.OutputType())
		return nil, errs
	}
	for _, w := range constantRateWindows(a) {
		if w.d < time.Second || w.d > MaxRateWindow {
			errs.Add(pos, "spec.condition", "CEL %d:%d: rate(%s): the window must be from 1s to %s", w.line, w.col, w.d, MaxRateWindow)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	prg, err := e.Program(a, cel.CostLimit(costLimit), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		errs.Add(pos, "spec.condition", "CEL: %v", err)
	}
	return prg, errs
}

type rateWindow struct {
	d         time.Duration
	line, col int
}

// constantRateWindows finds the calls rate(duration("…")) with a literal
// window, to refuse a window out of range when the rule is read (others
// fail at run time, closed).
func constantRateWindows(a *cel.Ast) []rateWindow {
	var out []rateWindow
	na := a.NativeRep()
	ast.PreOrderVisit(na.Expr(), ast.NewExprVisitor(func(e ast.Expr) {
		if e.Kind() != ast.CallKind || e.AsCall().FunctionName() != "rate" || len(e.AsCall().Args()) != 1 {
			return
		}
		arg := e.AsCall().Args()[0]
		if arg.Kind() != ast.CallKind || arg.AsCall().FunctionName() != "duration" || len(arg.AsCall().Args()) != 1 {
			return
		}
		lit := arg.AsCall().Args()[0]
		if lit.Kind() != ast.LiteralKind {
			return
		}
		s, ok := lit.AsLiteral().Value().(string)
		if !ok {
			return
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return // CEL refuses it as a constant itself
		}
		l := na.SourceInfo().GetStartLocation(e.ID())
		out = append(out, rateWindow{d: d, line: l.Line(), col: l.Column() + 1})
	}))
	return out
}

// location loads an IANA zone; "" is def (UTC when def is nil).
func location(name string, def *time.Location) (*time.Location, error) {
	if name == "" {
		if def == nil {
			return time.UTC, nil
		}
		return def, nil
	}
	if strings.HasPrefix(name, "/") || strings.Contains(name, "..") || name == "Local" {
		return nil, fmt.Errorf("time zone %q: write an IANA zone name such as UTC or Europe/Zurich", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q: write an IANA zone name such as UTC or Europe/Zurich", name)
	}
	return loc, nil
}
