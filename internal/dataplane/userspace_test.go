package dataplane_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/load"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func TestUserspaceConformance(t *testing.T) {
	dptest.Run(t, dptest.Userspace())
}

func TestUserspaceClosed(t *testing.T) {
	u := dataplane.NewUserspace()
	ctx := context.Background()
	if err := u.Apply(ctx, dataplane.Desired{}); err != nil {
		t.Fatal(err)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if err := u.Apply(ctx, dataplane.Desired{}); !errors.Is(err, dataplane.ErrClosed) {
		t.Errorf("Apply after Close: %v, want ErrClosed", err)
	}
	if _, err := u.Counters(ctx); !errors.Is(err, dataplane.ErrClosed) {
		t.Errorf("Counters after Close: %v, want ErrClosed", err)
	}
	p := policy.Packet{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Protocol: policy.TCP, SrcPort: 1, DstPort: 2}
	if a, _ := u.Packet("", p); a != policy.Allow {
		t.Errorf("Packet after Close: %s, want the last state (allow) still enforced", a)
	}
}

func TestUserspaceRejectsBadDesired(t *testing.T) {
	u := dataplane.NewUserspace()
	a := netip.MustParseAddr("10.0.0.1")
	for _, d := range []dataplane.Desired{
		{Attachments: []dataplane.Attachment{{Workload: "a/b", Addrs: []netip.Addr{a}}}},
		{Attachments: []dataplane.Attachment{{Workload: "a/b", Interface: "x", Addrs: []netip.Addr{a}}, {Workload: "a/c", Interface: "x"}}},
		{Attachments: []dataplane.Attachment{{Workload: "a/b", Interface: "x", Addrs: []netip.Addr{{}}}}},
	} {
		if err := u.Apply(context.Background(), d); err == nil {
			t.Errorf("Apply(%+v) passed", d)
		}
	}
}

func TestEnforced(t *testing.T) {
	side := func(a policy.Action) policy.Side { return policy.Side{Action: a} }
	for _, c := range []struct {
		v    policy.Verdict
		want policy.Action
	}{
		{policy.Verdict{Action: policy.Allow, Egress: side(policy.Allow), Ingress: side(policy.Allow)}, policy.Allow},
		{policy.Verdict{Action: policy.Deny, Egress: side(policy.Reject), Ingress: side(policy.Deny)}, policy.Reject},
		{policy.Verdict{Action: policy.Deny, Egress: side(policy.Deny), Ingress: side(policy.Reject)}, policy.Deny},
		{policy.Verdict{Action: policy.Deny, Egress: side(policy.Allow), Ingress: side(policy.Reject)}, policy.Reject},
		{policy.Verdict{Action: policy.Deny, Egress: side(policy.Escalate), Ingress: side(policy.Reject)}, policy.Reject},
		{policy.Verdict{Action: policy.Deny, Egress: side(policy.Reject), Ingress: side(policy.Allow), Wall: &policy.Wall{Name: "w"}}, policy.Deny},
		{policy.Verdict{Action: policy.Escalate, Egress: side(policy.Escalate), Ingress: side(policy.Allow)}, policy.Escalate},
	} {
		if got := dataplane.Enforced(c.v); got != c.want {
			t.Errorf("Enforced(egress %s, ingress %s, wall %v) = %s, want %s", c.v.Egress.Action, c.v.Ingress.Action, c.v.Wall != nil, got, c.want)
		}
	}
}

// Logged rules and would-deny records are kept, newest MaxLogs of them.
func TestUserspaceLogsAreBounded(t *testing.T) {
	set, errs := load.Bytes("p.yaml", []byte(`
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: p}
spec:
  appliesTo: {selector: {}}
  ingress: [{name: logged, action: allow, log: true}]
`))
	if errs.Err() != nil {
		t.Fatal(errs.Err())
	}
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	set.Workloads = []*policy.Workload{{Namespace: "n", Name: "a", IPs: []netip.Addr{a}}, {Namespace: "n", Name: "b", IPs: []netip.Addr{b}}}
	st, err := compile.Compile(set, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	u := dataplane.NewUserspace()
	if err := u.Apply(context.Background(), dataplane.Desired{State: st, Set: set}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < dataplane.MaxLogs+10; i++ {
		p := policy.Packet{Src: a, Dst: b, Protocol: policy.TCP, SrcPort: 1000 + i, DstPort: 80}
		if act, why := u.Packet("", p); act != policy.Allow {
			t.Fatalf("packet %d: %s (%s)", i, act, why)
		}
	}
	logs := u.Logs()
	if len(logs) != dataplane.MaxLogs || logs[0].Packet.SrcPort != 1010 || logs[len(logs)-1].Packet.SrcPort != 1000+dataplane.MaxLogs+9 {
		t.Fatalf("%d logs from port %d to %d, want the newest %d", len(logs), logs[0].Packet.SrcPort, logs[len(logs)-1].Packet.SrcPort, dataplane.MaxLogs)
	}
	c, _ := u.Counters(context.Background())
	if got := c.Rules["Policy/p/ingress/logged"].Packets; got != dataplane.MaxLogs+10 {
		t.Errorf("counter: %d, want %d", got, dataplane.MaxLogs+10)
	}
}
