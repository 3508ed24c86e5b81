package up

import (
	"net/netip"
	"testing"

	"github.com/bulkhead-dev/bulkhead/examples/demo"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/load"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// What the demo says of each connection is what the policy engine
// decides for the demo's policies and workloads.
func TestDemoExpectations(t *testing.T) {
	set := &policy.Set{}
	for _, f := range append(demo.Files(), demo.Decisions()...) {
		s, errs := load.Bytes(f.Name, f.Data)
		if len(errs) > 0 {
			t.Fatal(errs.Err())
		}
		set.Merge(s)
	}
	byName := map[string]demoWorkload{}
	for _, w := range floor {
		pw := &policy.Workload{Namespace: w.namespace, Name: w.name, Labels: w.labels,
			IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 213, 0, byte(w.offset)})}}
		for _, p := range w.ports {
			pw.Ports = append(pw.Ports, policy.NamedPort{Name: p.Name, Port: p.Port, Protocol: policy.TCP})
		}
		set.Workloads = append(set.Workloads, pw)
		byName[w.name] = w
	}
	e, err := policy.NewEngine(set)
	if err != nil {
		t.Fatal(err)
	}
	if breaches, err := policy.ProveWalls(set); err != nil || len(breaches) > 0 {
		t.Fatalf("the demo's policies breach its walls: %v %v", breaches, err)
	}
	for _, c := range connections {
		from, to := byName[c.from], byName[c.to]
		if from.name == "" || to.name == "" {
			t.Fatalf("connection %s -> %s names a workload the floor lacks", c.from, c.to)
		}
		fe, _ := e.Endpoint(from.namespace + "/" + from.name)
		te, _ := e.Endpoint(to.namespace + "/" + to.name)
		got := dataplane.Enforced(e.Evaluate(policy.Probe{From: fe, To: te, Protocol: policy.TCP, Port: c.port}))
		if string(got) != c.expect {
			t.Errorf("%s -> %s:%d: the policy says %s, the demo %s", c.from, c.to, c.port, got, c.expect)
		}
	}
}
