package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// nsPrefix names every namespace these tests create.
const nsPrefix = "bhcn"

// pluginBin is the real plugin binary, built once for all tests.
var pluginBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bhcn-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBin = filepath.Join(dir, "bulkhead-cni")
	out, err := exec.Command("go", "build", "-o", pluginBin, "github.com/bulkhead-dev/bulkhead/cmd/bulkhead-cni").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build bulkhead-cni: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fakeAgent is the agent's local API (api/agent.go) as the plugin uses it:
// a real HTTP server on a unix socket that records what it is told.
type fakeAgent struct {
	socket string
	srv    *http.Server
	served chan struct{} // closed once Serve returned (and closed its listener)
	once   sync.Once

	mu           sync.Mutex
	workloads    map[string]api.WorkloadRegistration // by namespace/name
	registered   []api.WorkloadRegistration          // every POST, in order
	unregistered []string
	refuse       string        // when set, POST /v1/workloads answers 400 with it
	delay        time.Duration // before answering a POST
}

func startFakeAgent(t *testing.T, socket string) *fakeAgent {
	t.Helper()
	f := &fakeAgent{socket: socket, workloads: map[string]api.WorkloadRegistration{}}
	f.serve(t)
	t.Cleanup(f.stop)
	return f
}

func (f *fakeAgent) serve(t *testing.T) {
	t.Helper()
	l, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.Health{Status: "ok"})
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, api.AgentStatus{Host: "fake"}) // no netns: enforces in no kernel namespace
	})
	mux.HandleFunc("GET /v1/workloads", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		list := []api.WorkloadRegistration{}
		for _, wl := range f.workloads {
			list = append(list, wl)
		}
		f.mu.Unlock()
		writeJSON(w, 200, list)
	})
	mux.HandleFunc("POST /v1/workloads", f.register)
	mux.HandleFunc("DELETE /v1/workloads/{ns}/{name}", func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("ns") + "/" + r.PathValue("name")
		f.mu.Lock()
		delete(f.workloads, key)
		f.unregistered = append(f.unregistered, key)
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	f.srv = &http.Server{Handler: mux}
	f.served = make(chan struct{})
	go func() {
		defer close(f.served)
		f.srv.Serve(l)
	}()
}

func (f *fakeAgent) register(w http.ResponseWriter, r *http.Request) {
	var reg api.WorkloadRegistration
	if err := json.NewDecoder(r.Body).Decode(&reg); err != nil {
		writeJSON(w, 400, api.APIError{Error: "decode: " + err.Error()})
		return
	}
	f.mu.Lock()
	refuse, delay := f.refuse, f.delay
	f.mu.Unlock()
	time.Sleep(delay)
	if refuse != "" {
		writeJSON(w, 400, api.APIError{Error: refuse, Details: []string{"workload " + reg.Namespace + "/" + reg.Name}})
		return
	}
	if reg.Namespace == "" || reg.Name == "" || len(reg.IPs) == 0 || reg.Interface == "" {
		writeJSON(w, 400, api.APIError{Error: "namespace, name, ips and interface are required"})
		return
	}
	f.mu.Lock()
	f.workloads[reg.Namespace+"/"+reg.Name] = reg
	f.registered = append(f.registered, reg)
	f.mu.Unlock()
	writeJSON(w, 200, reg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (f *fakeAgent) stop() {
	f.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		f.srv.Shutdown(ctx)
		// Serve closes (and unlinks) its listener when it returns, which may
		// be after Shutdown; only then is the path free for another server.
		<-f.served
		os.Remove(f.socket)
	})
}

func (f *fakeAgent) get(key string) (api.WorkloadRegistration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w, ok := f.workloads[key]
	return w, ok
}

func (f *fakeAgent) keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.workloads {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// hostEnv is a throwaway host: a network namespace the plugin runs in, a
// fake agent, and a data directory.
type hostEnv struct {
	t       *testing.T
	host    *netns.NS
	agent   *fakeAgent
	socket  string
	dataDir string
}

func newHostEnv(t *testing.T) *hostEnv {
	t.Helper()
	e := newBareHostEnv(t)
	e.agent = startFakeAgent(t, e.socket)
	return e
}

// newBareHostEnv is newHostEnv without an agent.
func newBareHostEnv(t *testing.T) *hostEnv {
	t.Helper()
	nstest.RequireRoot(t)
	nstest.RequireCommand(t, "ip")
	dir := t.TempDir()
	return &hostEnv{t: t, host: nstest.NS(t, nsPrefix), socket: filepath.Join(dir, "agent.sock"), dataDir: filepath.Join(dir, "data")}
}

// conf is the network configuration with extra keys merged in (a nil
// value removes a key).
func (e *hostEnv) conf(extra map[string]any) []byte {
	return netConf(e.socket, e.dataDir, extra)
}

func netConf(socket, dataDir string, extra map[string]any) []byte {
	c := map[string]any{
		"cniVersion": "1.1.0", "name": "bhnet", "type": "bulkhead-cni",
		"agentSocket": socket, "subnet": "10.77.0.0/16", "dataDir": dataDir,
	}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	b, _ := json.Marshal(c)
	return b
}

// call is one plugin invocation: exactly the spec's environment and stdin.
type call struct {
	Command, ContainerID, NetNS, IfName, Args string
	Stdin                                     []byte
}

// outcome is what the plugin printed and how it exited.
type outcome struct {
	Stdout, Stderr []byte
	Err            error
	Took           time.Duration
}

// cniErr decodes the error JSON; it fails the test when the plugin
// succeeded or printed something else.
func (o outcome) cniErr(t *testing.T) *types.Error {
	t.Helper()
	if o.Err == nil {
		t.Fatalf("plugin succeeded, want an error; stdout: %s", o.Stdout)
	}
	var e types.Error
	d := json.NewDecoder(bytes.NewReader(o.Stdout))
	d.DisallowUnknownFields()
	if err := d.Decode(&e); err != nil || e.Code == 0 || e.Msg == "" {
		t.Fatalf("stdout is not CNI error JSON (%v): %s\nstderr: %s", err, o.Stdout, o.Stderr)
	}
	return &e
}

func (o outcome) ok(t *testing.T) []byte {
	t.Helper()
	if o.Err != nil {
		t.Fatalf("plugin failed: %v\nstdout: %s\nstderr: %s", o.Err, o.Stdout, o.Stderr)
	}
	return o.Stdout
}

// run runs the plugin inside the host namespace, as a runtime on that
// host would.
func (e *hostEnv) run(c call) outcome {
	return runPlugin(e.host, c)
}

func runPlugin(host *netns.NS, c call) outcome {
	var argv []string
	if host != nil {
		argv = []string{"ip", "netns", "exec", host.Name}
	}
	argv = append(argv, pluginBin)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"CNI_COMMAND=" + c.Command, "CNI_PATH=" + filepath.Dir(pluginBin)}
	for k, v := range map[string]string{"CNI_CONTAINERID": c.ContainerID, "CNI_NETNS": c.NetNS, "CNI_IFNAME": c.IfName, "CNI_ARGS": c.Args} {
		if v != "" {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
	}
	cmd.Stdin = bytes.NewReader(c.Stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return outcome{Err: err}
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(90 * time.Second):
		cmd.Process.Kill()
		err = errors.Join(errors.New("plugin timed out after 90 s"), <-done)
	}
	return outcome{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), Err: err, Took: time.Since(start)}
}

// hostLinks lists the host namespace's interface names.
func (e *hostEnv) hostLinks() string {
	e.t.Helper()
	return nstest.Run(e.t, e.host, "ip", "-o", "link", "show")
}

func (e *hostEnv) state() *State {
	e.t.Helper()
	st, err := (&Store{Dir: filepath.Join(e.dataDir, "bhnet")}).Read()
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// errorCode is the CNI code of err, or 0.
func errorCode(err error) uint {
	var e *types.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}
