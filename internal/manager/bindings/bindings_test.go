package bindings_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/bindings"
)

// The first access binds; every later one to another dataset of the
// class is denied by that binding, and names it.
func TestFirstAccessBinds(t *testing.T) {
	st := openBolt(t, boltPath(t))
	b := newBindings(t, st, nil)
	cc, pay := class("lifecycle", 0), instance("bhbn-proc")
	mustCheck(t, b, pay, cc, "cards", bindings.Unbound)
	first := mustBind(t, b, pay, cc, "cards")
	if first.Dataset != "cards" || first.Class != cc.Name || first.Scope != "lifecycle" || first.Instance != pay || first.Rev == 0 {
		t.Fatalf("first binding: %+v", first)
	}
	again := mustBind(t, b, pay, cc, "ledger")
	if again != first {
		t.Fatalf("a second bind to ledger returned %+v, want the binding in force %+v", again, first)
	}
	mustCheck(t, b, pay, cc, "cards", bindings.Allowed)
	v := mustCheck(t, b, pay, cc, "ledger", bindings.Denied)
	if v.Binding == nil || *v.Binding != first {
		t.Fatalf("denied by %+v, want %+v", v.Binding, first)
	}
	mustCheck(t, b, instance("bhbn-other"), cc, "ledger", bindings.Unbound)
	if n := len(entries(t, st, "binding.bind")); n != 1 {
		t.Fatalf("%d binding.bind entries in the audit log, want 1", n)
	}
	list, err := b.List(ctx)
	if err != nil || len(list) != 1 || list[0] != first {
		t.Fatalf("list: %+v, %v", list, err)
	}
}

// A dataset the class does not list, or an instance without its name,
// is refused before anything is written.
func TestBindRefusesWhatTheClassDoesNotList(t *testing.T) {
	st := openBolt(t, boltPath(t))
	b := newBindings(t, st, nil)
	cc := class("lifecycle", 0)
	if _, err := b.Bind(ctx, instance("bhbn-proc"), cc, "bhbn-nope"); !errors.Is(err, fault.Invalid) {
		t.Errorf("bind to an unlisted dataset: %v, want fault.Invalid", err)
	}
	if _, err := b.Check(ctx, instance("bhbn-proc"), cc, "bhbn-nope"); !errors.Is(err, fault.Invalid) {
		t.Errorf("check of an unlisted dataset: %v, want fault.Invalid", err)
	}
	if _, err := b.Bind(ctx, bindings.Instance{Host: "bhbn-host-a", Name: "x"}, cc, "cards"); !errors.Is(err, fault.Invalid) {
		t.Errorf("bind without a namespace: %v, want fault.Invalid", err)
	}
	if list, _ := b.List(ctx); len(list) != 0 {
		t.Errorf("refused binds wrote %+v", list)
	}
}

// A window binding holds for its window and then frees the workload;
// Sweep removes it from the store, audited.
func TestWindowExpires(t *testing.T) {
	st := openBolt(t, boltPath(t))
	c := newClock()
	b := newBindings(t, st, c)
	cc, pay := class("window", time.Hour), instance("bhbn-proc")
	first := mustBind(t, b, pay, cc, "cards")
	if want := c.Now().Add(time.Hour); !first.Expires.Equal(want) {
		t.Fatalf("expires %s, want %s", first.Expires, want)
	}
	c.advance(59 * time.Minute)
	mustCheck(t, b, pay, cc, "ledger", bindings.Denied)
	if n, err := b.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep before the end: %d, %v", n, err)
	}
	c.advance(time.Minute)
	mustCheck(t, b, pay, cc, "ledger", bindings.Unbound)
	mustCheck(t, b, pay, cc, "cards", bindings.Unbound)
	if list, _ := b.List(ctx); len(list) != 0 {
		t.Fatalf("expired bindings listed: %+v", list)
	}
	// The expired binding is replaced by the next first access...
	if got := mustBind(t, b, pay, cc, "ledger"); got.Dataset != "ledger" {
		t.Fatalf("bind after expiry: %+v", got)
	}
	// ...or swept.
	c.advance(2 * time.Hour)
	if n, err := b.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v; want 1", n, err)
	}
	if n := len(entries(t, st, "binding.expire")); n != 1 {
		t.Fatalf("%d binding.expire entries, want 1", n)
	}
}

// A session binding lasts until End; End is audited with its actor, and
// ends nothing of another scope.
func TestEndEndsASession(t *testing.T) {
	st := openBolt(t, boltPath(t))
	c := newClock()
	b := newBindings(t, st, c)
	cc, pay := class("session", 0), instance("bhbn-proc")
	first := mustBind(t, b, pay, cc, "cards")
	if !first.Expires.IsZero() {
		t.Fatalf("a session without a window expires at %s", first.Expires)
	}
	c.advance(30 * 24 * time.Hour)
	mustCheck(t, b, pay, cc, "ledger", bindings.Denied)
	ops := audit.Actor{Kind: "token", Name: "bhbn-payments-app", Role: "operator"}
	ended, err := b.End(ctx, ops, pay.Workload(), cc.Name)
	if err != nil || ended != first {
		t.Fatalf("end: %+v, %v; want %+v", ended, err, first)
	}
	mustCheck(t, b, pay, cc, "ledger", bindings.Unbound)
	if es := entries(t, st, "binding.end"); len(es) != 1 || es[0].Actor != ops {
		t.Fatalf("binding.end entries: %+v", es)
	}
	if _, err := b.End(ctx, ops, pay.Workload(), cc.Name); !errors.Is(err, fault.NotFound) {
		t.Fatalf("end again: %v, want fault.NotFound", err)
	}
	// A session's optional window bounds it.
	win := class("session", time.Hour)
	if got := mustBind(t, b, pay, win, "fx"); !got.Expires.Equal(c.Now().Add(time.Hour)) {
		t.Fatalf("session with a window: %+v", got)
	}
	life := class("lifecycle", 0)
	life.Name = "bhbn-life"
	mustBind(t, b, pay, life, "cards")
	if _, err := b.End(ctx, ops, pay.Workload(), life.Name); !errors.Is(err, fault.Conflict) {
		t.Fatalf("end of a lifecycle binding: %v, want fault.Conflict", err)
	}
	mustCheck(t, b, pay, life, "ledger", bindings.Denied)
}

// A lifecycle binding goes with the workload (Release), whichever
// instance made it; its other bindings, and other workloads', stay.
func TestReleaseEndsALifecycle(t *testing.T) {
	st := openBolt(t, boltPath(t))
	b := newBindings(t, st, nil)
	life, perm := class("lifecycle", 0), class("permanent", 0)
	perm.Name = "bhbn-perm"
	pay, other := instance("bhbn-proc"), instance("bhbn-other")
	mustBind(t, b, pay, life, "cards")
	mustBind(t, b, pay, perm, "cards")
	mustBind(t, b, other, life, "cards")
	restarted := pay
	restarted.ContainerID = "bhbn-restarted"
	mustCheck(t, b, restarted, life, "ledger", bindings.Denied)
	got, err := b.Release(ctx, pay.Workload())
	if err != nil || len(got) != 1 || got[0].Class != life.Name {
		t.Fatalf("release: %+v, %v; want the lifecycle binding", got, err)
	}
	mustCheck(t, b, restarted, life, "ledger", bindings.Unbound)
	mustCheck(t, b, restarted, perm, "ledger", bindings.Denied)
	mustCheck(t, b, other, life, "ledger", bindings.Denied)
	if n := len(entries(t, st, "binding.release")); n != 1 {
		t.Fatalf("%d binding.release entries, want 1", n)
	}
}

// Bindings live in the store: a manager started again over it, or
// another manager, sees them.
func TestBindingsSurviveARestart(t *testing.T) {
	path := boltPath(t)
	st := openBolt(t, path)
	cc, pay := class("permanent", 0), instance("bhbn-proc")
	first := mustBind(t, newBindings(t, st, nil), pay, cc, "ledger")
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	b := newBindings(t, openBolt(t, path), nil)
	v := mustCheck(t, b, pay, cc, "cards", bindings.Denied)
	if *v.Binding != first {
		t.Fatalf("after the restart: %+v, want %+v", v.Binding, first)
	}
	if got := mustBind(t, b, pay, cc, "cards"); got != first {
		t.Fatalf("bind after the restart: %+v, want %+v", got, first)
	}
}

// Only an admin clears a binding; the clearing is audited with the
// binding it removed.
func TestClearIsForAdminsAndAudited(t *testing.T) {
	st := openBolt(t, boltPath(t))
	b := newBindings(t, st, nil)
	cc, pay := class("permanent", 0), instance("bhbn-proc")
	first := mustBind(t, b, pay, cc, "cards")
	for _, who := range []audit.Actor{{Kind: "token", Name: "bhbn-op", Role: "operator"}, {Kind: "agent", Name: "bhbn-host-a"}} {
		if _, err := b.Clear(ctx, who, pay.Workload(), cc.Name); !errors.Is(err, fault.Forbidden) {
			t.Fatalf("clear by %+v: %v, want fault.Forbidden", who, err)
		}
	}
	mustCheck(t, b, pay, cc, "ledger", bindings.Denied)
	cleared, err := b.Clear(ctx, admin, pay.Workload(), cc.Name)
	if err != nil || cleared != first {
		t.Fatalf("clear: %+v, %v", cleared, err)
	}
	mustCheck(t, b, pay, cc, "ledger", bindings.Unbound)
	es := entries(t, st, "binding.clear")
	if len(es) != 1 || es[0].Actor != admin || es[0].Object != "bindings/bhbn-pay/bhbn-proc/bhbn-payments" {
		t.Fatalf("binding.clear entries: %+v", es)
	}
	if _, err := b.Clear(ctx, admin, pay.Workload(), cc.Name); !errors.Is(err, fault.NotFound) {
		t.Fatalf("clear again: %v, want fault.NotFound", err)
	}
}

// SweepLoop sweeps until its context ends.
func TestSweepLoop(t *testing.T) {
	st := openBolt(t, boltPath(t))
	c := newClock()
	b := newBindings(t, st, c)
	mustBind(t, b, instance("bhbn-proc"), class("window", time.Minute), "cards")
	c.advance(time.Hour)
	loopCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); b.SweepLoop(loopCtx, 5*time.Millisecond, func(err error) { t.Error(err) }) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(entries(t, st, "binding.expire")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("nothing swept in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}
