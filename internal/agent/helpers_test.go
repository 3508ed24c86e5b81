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

// fakeDP records what it was told to enforce and fails on demand.
type fakeDP struct {
	mu      sync.Mutex
	applies int
	last    dataplane.Desired
	fail    error
	closed  bool
}

func (f *fakeDP) Apply(ctx context.Context, d dataplane.Desired) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return dataplane.ErrClosed
	}
	if f.fail != nil {
		return f.fail
	}
	f.applies++
	f.last = d
	return nil
}

func (f *fakeDP) Counters(context.Context) (dataplane.Counters, error) {
	return dataplane.Counters{Rules: map[string]dataplane.Counter{"r": {Packets: 1, Bytes: 60}}}, nil
}

func (f *fakeDP) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeDP) setFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

func (f *fakeDP) snapshot() (int, dataplane.Desired) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applies, f.last
}

// enforced judges a connection with the tables the dataplane was last
// given (compile.Lookup makes the kernel's lookups).
func (f *fakeDP) enforced(t *testing.T, from, to string, proto policy.Protocol, port int) policy.Action {
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
	return compile.Lookup(d.State, policy.Probe{From: fe, To: te, Protocol: proto, Port: port}).Action
}

var errBoom = errors.New("boom")

// testAgent is an agent on a socket in a fresh directory.
type testAgent struct {
	*Agent
	dp     *fakeDP
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
	dp := &fakeDP{}
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
