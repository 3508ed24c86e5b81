package escalate

import (
	"context"
	"net/netip"
	"sync"
	"time"
)

// DeciderFunc is a Decider made of a function.
type DeciderFunc func(ctx context.Context, r Request) (Decision, error)

// Decide calls f.
func (f DeciderFunc) Decide(ctx context.Context, r Request) (Decision, error) { return f(ctx, r) }

// AllowAll is a fake Decider that allows every connection at once,
// remembering the decision for remember (0: this connection only).
func AllowAll(remember time.Duration) Decider {
	return DeciderFunc(func(context.Context, Request) (Decision, error) {
		return Decision{Verdict: Allow, Remember: remember, Reason: "fake: allow all"}, nil
	})
}

// FakeResolver is a Resolver over a fixed table of endpoints, for tests.
// An address it does not know resolves to an Endpoint with only its
// address (identity 0: unknown). Every connection gets the same rule
// terms. Set its fields before use; it is safe for concurrent use after.
type FakeResolver struct {
	Endpoints map[netip.Addr]Endpoint
	Rule      string
	Timeout   time.Duration
	OnTimeout Verdict
	Err       error // returned by every Resolve when set
}

// Resolve looks both addresses up.
func (f *FakeResolver) Resolve(_ context.Context, c Conn) (Ends, error) {
	if f.Err != nil {
		return Ends{}, f.Err
	}
	end := func(a netip.Addr) Endpoint {
		e := f.Endpoints[a]
		e.Addr = a
		return e
	}
	return Ends{Src: end(c.Src), Dst: end(c.Dst), Rule: f.Rule, Timeout: f.Timeout, OnTimeout: f.OnTimeout}, nil
}

// FakeOffload records what a Holder installs and withdraws, as a
// dataplane's set of remembered decisions would hold them.
type FakeOffload struct {
	mu        sync.Mutex
	installed []Remembered
	withdrawn []Key
}

// Install records r.
func (f *FakeOffload) Install(_ context.Context, r Remembered) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.installed = append(f.installed, r)
	return nil
}

// Withdraw records k.
func (f *FakeOffload) Withdraw(_ context.Context, k Key) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.withdrawn = append(f.withdrawn, k)
	return nil
}

// Installed returns what was installed, in order.
func (f *FakeOffload) Installed() []Remembered {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Remembered(nil), f.installed...)
}

// Withdrawn returns what was withdrawn, in order.
func (f *FakeOffload) Withdrawn() []Key {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Key(nil), f.withdrawn...)
}

// FakeOperator is a fake Decider that holds every question until the test
// answers it, as a person would: Answer gives the next decision, taken by
// whichever question waits (or the next to come). A question whose
// context ends first returns the context's error.
type FakeOperator struct {
	mu      sync.Mutex
	asked   []Request
	answers chan Decision
}

// NewFakeOperator returns a FakeOperator that buffers up to 1,024 answers.
func NewFakeOperator() *FakeOperator {
	return &FakeOperator{answers: make(chan Decision, 1024)}
}

// Decide records r and waits for an answer.
func (o *FakeOperator) Decide(ctx context.Context, r Request) (Decision, error) {
	o.mu.Lock()
	o.asked = append(o.asked, r)
	o.mu.Unlock()
	select {
	case d := <-o.answers:
		return d, nil
	case <-ctx.Done():
		return Decision{}, ctx.Err()
	}
}

// Answer gives one question the decision d.
func (o *FakeOperator) Answer(d Decision) { o.answers <- d }

// Asked returns the questions asked so far, in order.
func (o *FakeOperator) Asked() []Request {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Request(nil), o.asked...)
}

// Count is len(Asked()).
func (o *FakeOperator) Count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.asked)
}
