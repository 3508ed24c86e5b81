package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent/client"
	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// testDP is the userspace dataplane, recording what it was told to
// enforce and failing on demand.
type testDP struct {
	*dataplane.Userspace
	mu      sync.Mutex
	applies int
	last    dataplane.Desired
	fail    error
	closed  bool
	port    int           // source ports of probe packets, fresh for each
	gate    chan struct{} // when set, Apply waits for it
	entered chan struct{} // when set, Apply signals it (without blocking) on entry
}

func newTestDP() *testDP { return &testDP{Userspace: dataplane.NewUserspace()} }

func (f *testDP) Apply(ctx context.Context, d dataplane.Desired) error {
	f.mu.Lock()
	gate := f.gate
	if f.entered != nil {
		select {
		case f.entered <- struct{}{}:
		default:
		}
	}
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	if err := f.Userspace.Apply(ctx, d); err != nil {
		return err
	}
	f.applies++
	f.last = d
	return nil
}

func (f *testDP) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return f.Userspace.Close()
}

func (f *testDP) setFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

func (f *testDP) snapshot() (int, dataplane.Desired) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applies, f.last
}

// enforced sends the first packet of a new connection from one registered
// workload to another through the dataplane, from the source's interface,
// and checks that the compiled tables the dataplane was given agree
// (compile.Lookup makes the kernel's lookups).
func (f *testDP) enforced(t *testing.T, from, to string, proto policy.Protocol, port int) policy.Action {
	t.Helper()
	_, d := f.snapshot()
	e, err := policy.NewEngine(d.Set)
	if err != nil {
		t.Fatal(err)
	}
	fe, err := e.Endpoint(from)
	if err != nil {
		t.Fatal(err)
	}
	te, err := e.Endpoint(to)
	if err != nil {
		t.Fatal(err)
	}
	iface := ""
	for _, a := range d.Attachments {
		if a.Workload == from {
			iface = a.Interface
		}
	}
	fe.Addr, te.Addr = fe.Workload.IPs[0], te.Workload.IPs[0]
	f.mu.Lock()
	f.port++
	sport := 30000 + f.port
	f.mu.Unlock()
	got, why := f.Packet(iface, policy.Packet{Src: fe.Addr, Dst: te.Addr, Protocol: proto, SrcPort: sport, DstPort: port})
	if d.State != nil {
		v := compile.Lookup(d.State, policy.Probe{From: fe, To: te, Protocol: proto, Port: port})
		if dataplane.Enforced(v) != got {
			t.Errorf("%s -> %s: the dataplane says %s (%s), its tables %s", from, to, got, why, dataplane.Enforced(v))
		}
	}
	return got
}

var errBoom = errors.New("boom")

// testAgent is an agent on a socket in a fresh directory.
type testAgent struct {
	*Agent
	dp     *testDP
	c      *client.Client
	dir    string
	socket string
}

func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bhag")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func startAgent(t *testing.T, dir string) *testAgent {
	t.Helper()
	dp := newTestDP()
	sock := filepath.Join(dir, "run", "agent.sock")
	a, err := Start(context.Background(), Options{StateDir: filepath.Join(dir, "state"), Socket: sock, Host: "h1", Dataplane: dp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	c, err := client.New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	return &testAgent{Agent: a, dp: dp, c: c, dir: dir, socket: sock}
}

func docs(t *testing.T, paths ...string) []api.Document {
	t.Helper()
	var out []api.Document
	for _, p := range paths {
		files := []string{p}
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			files, _ = filepath.Glob(filepath.Join(p, "*.yaml"))
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, api.Document{Name: f, Data: string(data)})
		}
	}
	return out
}

func doc(name, data string) api.Document { return api.Document{Name: name, Data: data} }

// inventory is the example trading floor as registrations.
var inventory = []api.WorkloadRegistration{
	{Namespace: "trading", Name: "buy-signal", Labels: map[string]string{"role": "buy-signal", "side": "buy"}, IPs: []string{"10.10.1.10", "fd00:10::10"}, Interface: "bhbuysig"},
	{Namespace: "trading", Name: "sell-signal", Labels: map[string]string{"role": "sell-signal", "side": "sell"}, IPs: []string{"10.10.1.20", "fd00:10::20"}, Interface: "bhsellsig"},
	{Namespace: "trading", Name: "buy-db", Labels: map[string]string{"role": "database", "side": "buy"}, IPs: []string{"10.10.2.10"}, Interface: "bhbuydb",
		Ports: []api.NamedPort{{Name: "postgres", Port: 5432, Protocol: "TCP"}}},
	{Namespace: "trading", Name: "sell-db", Labels: map[string]string{"role": "database", "side": "sell"}, IPs: []string{"10.10.2.20"}, Interface: "bhselldb",
		Ports: []api.NamedPort{{Name: "postgres", Port: 5432, Protocol: "TCP"}}},
}

const (
	examples = "../../examples/policies"
	breach   = "../../examples/breach.yaml"
)

func apiError(t *testing.T, err error) *client.Error {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("want an error answer from the agent, got %v", err)
	}
	return e
}
