package decide

import (
	"cel.dev/cel-go/common/functions"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"
)

// activation gives one request's variables to conditions, and rate()
// bound to its source and time. now is computed once per zone.
type activation struct {
	e    *Engine
	r    *Request
	loc  int // the zone of the rule being evaluated
	nows []*Now
	rate functions.LateBoundOp
}

var _ interpreter.FunctionActivation = (*activation)(nil)

func newActivation(e *Engine, r *Request) *activation {
	a := &activation{e: e, r: r, nows: make([]*Now, len(e.locs))}
	a.rate = a.rateOf
	return a
}

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "source":
		return &a.r.Source, true
	case "destination":
		return &a.r.Destination, true
	case "port":
		return a.r.Port, true
	case "protocol":
		return a.r.Protocol.String(), true
	case "now":
		if a.nows[a.loc] == nil {
			n := nowIn(a.r.Time, a.e.locs[a.loc])
			a.nows[a.loc] = &n
		}
		return a.nows[a.loc], true
	case "escalation":
		return &a.r.Escalation, true
	case "history":
		return &a.r.History, true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }

func (a *activation) ResolveFunction(name string) (functions.LateBoundOp, bool) {
	if name == "rate" {
		return a.rate, true
	}
	return nil, false
}

func (a *activation) rateOf(_ string, args ...ref.Val) ref.Val {
	d, ok := args[0].(types.Duration)
	if !ok || len(args) != 1 {
		return types.NewErr("rate: want one duration")
	}
	if d.Duration < 1e9 || d.Duration > MaxRateWindow {
		return types.NewErr("rate(%s): the window must be from 1s to %s", d.Duration, MaxRateWindow)
	}
	return types.Int(a.e.rates.Count(a.r.Source.Key(), a.r.Time, d.Duration))
}
