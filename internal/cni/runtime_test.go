package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
	"github.com/bulkhead-dev/bulkhead/internal/runtimes"
)

// Issue 10, labels from the runtime: with labelsFrom, a container's
// labels, namespace and named ports come from its runtime's API when the
// network's args give no labels; a container whose labels cannot be
// known is never attached.

func TestIdentityFromLabels(t *testing.T) {
	p := &plugin{ctx: context.Background(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	src := runtimes.NewFake(
		runtimes.Container{ID: "web", Name: "web", Labels: map[string]string{"app": "web", LabelNamespace: "shop", LabelPorts: "http:8080, pg:5432/TCP,dns:53/udp"}},
		runtimes.Container{ID: "bare", Name: "bare"},
		runtimes.Container{ID: "bad", Name: "bad", Labels: map[string]string{"org.opencontainers.image.description": "a web server", "-x": "1",
			LabelNamespace: "Shop", LabelPorts: "pg:99999,:80,http"}},
	)
	at := &attachment{conf: &Config{}, containerID: "web"}
	w := Workload{Namespace: "default", Name: "web"}
	if err := p.fromRuntime(at, src, &w, time.Second); err != nil {
		t.Fatal(err)
	}
	wantPorts := []api.NamedPort{{Name: "http", Port: 8080, Protocol: "tcp"}, {Name: "pg", Port: 5432, Protocol: "tcp"}, {Name: "dns", Port: 53, Protocol: "udp"}}
	if w.Namespace != "shop" || !maps.Equal(at.conf.Args.Labels, map[string]string{"app": "web"}) || !slices.Equal(at.conf.Args.Ports, wantPorts) {
		t.Errorf("from the runtime: namespace %q labels %v ports %v", w.Namespace, at.conf.Args.Labels, at.conf.Args.Ports)
	}

	// No labels at all is a known identity: none.
	at = &attachment{conf: &Config{}, containerID: "bare"}
	if err := p.fromRuntime(at, src, &Workload{Namespace: "default"}, time.Second); err != nil || at.conf.Args.Labels == nil || len(at.conf.Args.Labels) != 0 {
		t.Errorf("no labels: %v, %v", at.conf.Args.Labels, err)
	}

	for _, c := range []struct {
		id   string
		w    Workload
		conf Config
		src  runtimes.Source
		want []string
	}{
		{"bad", Workload{Namespace: "default"}, Config{}, src, []string{
			`label org.opencontainers.image.description="a web server"`, `label key "-x"`, `label bulkhead.dev/namespace="Shop"`,
			`"pg:99999": want NAME:PORT`, `"http": want NAME:PORT`, `label bulkhead.dev/ports: ports[0].name: invalid port name ""`}},
		{"gone", Workload{Namespace: "default"}, Config{}, src, []string{"no such container", "not attached without them", "after waiting 200ms"}},
		{"web", Workload{Namespace: "other", NamespaceGiven: true}, Config{}, src, []string{"K8S_POD_NAMESPACE=\"other\" disagree"}},
		{"web", Workload{Namespace: "default"}, Config{Args: Args{Ports: []api.NamedPort{{Name: "x", Port: 1}}}}, src, []string{"both give named ports"}},
		{"web", Workload{Namespace: "default"}, Config{}, &runtimes.Fake{Err: errors.New("connection refused")}, []string{"connection refused"}},
	} {
		conf := c.conf
		at := &attachment{conf: &conf, containerID: c.id}
		err := p.fromRuntime(at, c.src, &c.w, 200*time.Millisecond)
		if errorCode(err) != CodeRuntime {
			t.Errorf("%s: %v, want code 108", c.id, err)
			continue
		}
		for _, want := range c.want {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error lacks %q: %v", c.id, want, err)
			}
		}
		if conf.Args.Labels != nil {
			t.Errorf("%s: labels set despite the error: %v", c.id, conf.Args.Labels)
		}
	}
}

// fakePodman serves libpod's inspect endpoint on a real unix socket, with
// the containers it holds, and counts what it is asked.
type fakePodman struct {
	mu         sync.Mutex
	containers map[string]map[string]string // id → labels
	asked      int
}

func startFakePodman(t *testing.T) (*fakePodman, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "podman.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePodman{containers: map[string]map[string]string{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.asked++
		var filter struct {
			Container []string `json:"container"`
		}
		if r.URL.Path != "/v4.0.0/libpod/events" || json.Unmarshal([]byte(r.URL.Query().Get("filters")), &filter) != nil || len(filter.Container) != 1 {
			writeJSON(w, 400, map[string]any{"cause": "bad request", "message": "bad request", "response": 400})
			return
		}
		for id, labels := range f.containers {
			if strings.HasPrefix(id, filter.Container[0]) {
				attrs := map[string]string{"image": "localhost/img:1", "name": id + "_ctr", "podId": "", "containerExitCode": "0"}
				maps.Copy(attrs, labels)
				json.NewEncoder(w).Encode(map[string]any{"Type": "container", "Action": "create", "from": "localhost/img:1",
					"Actor": map[string]any{"ID": id, "Attributes": attrs}})
			}
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return f, sock
}

func TestLabelsFromPodmanThroughTheBinary(t *testing.T) {
	e := newVersionEnv(t)
	pod, sock := startFakePodman(t)
	pod.containers["web"] = map[string]string{"app": "web", "io.buildah.version": "1.28.2", LabelNamespace: "shop", LabelPorts: "http:8080"}
	pod.containers["bad"] = map[string]string{"description": "has spaces"}
	conf := e.conf(map[string]any{"labelsFrom": map[string]any{"runtime": "podman", "socket": "unix://" + sock, "timeout": "500ms"}})
	args := func(name string) string { return "IgnoreUnknown=1;K8S_POD_NAME=" + name }

	w := nstest.NS(t, verPrefix)
	e.run(call{Command: "ADD", ContainerID: "web", NetNS: w.Path(), IfName: "eth0", Args: args("web"), Stdin: conf}).ok(t)
	reg, ok := e.agent.get("shop/web")
	if !ok || !maps.Equal(reg.Labels, map[string]string{"app": "web", "io.buildah.version": "1.28.2"}) ||
		len(reg.Ports) != 1 || reg.Ports[0] != (api.NamedPort{Name: "http", Port: 8080, Protocol: "tcp"}) {
		t.Errorf("agent holds %v: %+v, want shop/web with app=web and port http", e.agent.keys(), reg)
	}
	// DEL needs no labels: it asks Podman nothing, and works with Podman gone.
	asked := pod.asked
	e.run(call{Command: "DEL", ContainerID: "web", NetNS: w.Path(), IfName: "eth0", Args: args("web"),
		Stdin: e.conf(map[string]any{"labelsFrom": map[string]any{"runtime": "podman", "socket": "/nonexistent.sock"}})}).ok(t)
	if pod.asked != asked {
		t.Error("DEL asked podman")
	}

	for _, c := range []struct {
		id, want string
		stdin    []byte
	}{
		{"gone", "no such container", conf},
		{"we", "no such container", conf}, // a prefix of web's id
		{"bad", `label description="has spaces"`, conf},
		{"web", "connect", e.conf(map[string]any{"labelsFrom": map[string]any{"runtime": "podman", "socket": filepath.Join(t.TempDir(), "none.sock"), "timeout": "500ms"}})},
	} {
		ce := e.run(call{Command: "ADD", ContainerID: c.id, NetNS: w.Path(), IfName: "eth0", Args: args(c.id), Stdin: c.stdin}).cniErr(t)
		if ce.Code != CodeRuntime || !strings.Contains(ce.Details, c.want) {
			t.Errorf("ADD %s = %d %s, want 108 with %q", c.id, ce.Code, ce.Details, c.want)
		}
		e.nothingLeft(t, w, c.id)
	}
	if keys := e.agent.keys(); len(keys) != 0 {
		t.Errorf("a workload without known labels reached the agent: %v", keys)
	}

	// Labels in args win: Podman is not asked.
	asked = pod.asked
	withArgs := e.conf(map[string]any{"labelsFrom": map[string]any{"runtime": "podman", "socket": sock},
		"args": map[string]any{"cni": map[string]any{"labels": []map[string]string{{"key": "app", "value": "db"}}}}})
	e.run(call{Command: "ADD", ContainerID: "gone", NetNS: w.Path(), IfName: "eth0", Args: args("db"), Stdin: withArgs}).ok(t)
	if reg, _ := e.agent.get("default/db"); reg.Labels["app"] != "db" || pod.asked != asked {
		t.Errorf("with args.cni.labels: %+v, podman asked %d times", reg, pod.asked-asked)
	}
}

func TestLabelsFromConfig(t *testing.T) {
	base := `{"cniVersion": "1.1.0", "name": "n", "subnet": "10.1.0.0/24", "labelsFrom": `
	c, err := ParseConfig([]byte(base + `{"runtime": "podman"}}`))
	if err != nil || c.LabelsFrom == nil || c.LabelsFrom.Socket != runtimes.DefaultPodmanSocket {
		t.Errorf("labelsFrom podman = %+v, %v; want the default socket", c, err)
	}
	c, err = ParseConfig([]byte(base + `{"runtime": "containerd", "namespace": "k8s.io", "timeout": "30s"}}`))
	if err != nil || c.LabelsFrom == nil || c.LabelsFrom.Socket != runtimes.DefaultContainerdSocket ||
		c.LabelsFrom.Namespace != "k8s.io" || c.LabelsFrom.waitFor() != 30*time.Second {
		t.Errorf("labelsFrom containerd = %+v, %v; want the default socket, namespace k8s.io, 30 s", c.LabelsFrom, err)
	}
	for _, bad := range []struct{ v, want string }{
		{`{"runtime": "docker"}`, `labelsFrom.runtime "docker": want "podman" or "containerd"`},
		{`{"runtime": "podman", "namespace": "default"}`, `labelsFrom.namespace "default": podman has no namespaces`},
		{`{"runtime": "containerd", "namespace": "a/b"}`, `labelsFrom.namespace "a/b": want letters and digits`},
		{`{"runtime": "containerd", "socket": "c.sock"}`, `labelsFrom.socket "c.sock": want an absolute socket path such as "/run/containerd/containerd.sock"`},
		{`{"runtime": "containerd", "timeout": "forever"}`, `labelsFrom.timeout "forever": want a duration`},
		{`{"runtime": "containerd", "timeout": "10m"}`, `at most 2m0s`},
		{`{"runtime": "podman", "socket": "podman.sock"}`, "labelsFrom.socket"},
		{`{"runtime": "podman", "sokcet": "/x"}`, `unknown field "sokcet"`},
		{`"podman"`, "labelsFrom: want"},
	} {
		_, err := ParseConfig([]byte(base + bad.v + `}`))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("labelsFrom %s = %v, want %q", bad.v, err, bad.want)
		}
	}
	// DEL does not read it.
	if _, err := ParseDelConfig([]byte(base + `{"runtime": "docker"}}`)); err != nil {
		t.Errorf("DEL with a bad labelsFrom: %v", err)
	}
}

// TestLabelsWaitForTheRuntime: ADD is held while the runtime does not
// know the container yet or cannot be reached, and goes on as soon as
// the labels arrive; never without them.
func TestLabelsWaitForTheRuntime(t *testing.T) {
	p := &plugin{ctx: context.Background(), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	web := runtimes.Container{ID: "web", Labels: map[string]string{"app": "web"}}
	for name, arrange := range map[string]func(f *runtimes.Fake) func(){
		"not yet known": func(f *runtimes.Fake) func() { return func() { f.Add(web) } },
		"unreachable": func(f *runtimes.Fake) func() {
			f.Add(web)
			f.SetErr(fmt.Errorf("dial: %w", runtimes.ErrUnavailable))
			return func() { f.SetErr(nil) }
		},
	} {
		f := runtimes.NewFake()
		later := arrange(f)
		time.AfterFunc(300*time.Millisecond, later)
		at := &attachment{conf: &Config{}, containerID: "web"}
		start := time.Now()
		err := p.fromRuntime(at, f, &Workload{Namespace: "default"}, 5*time.Second)
		if took := time.Since(start); err != nil || at.conf.Args.Labels["app"] != "web" || took < 300*time.Millisecond || took > 3*time.Second {
			t.Errorf("%s: %v after %v, labels %v; want app=web once it arrives (after 300ms)", name, err, took, at.conf.Args.Labels)
		}
		if f.Asked("web") < 2 {
			t.Errorf("%s: asked %d times, want retries", name, f.Asked("web"))
		}
	}
	// Bounded: never arriving fails closed after the wait.
	f := runtimes.NewFake()
	f.SetErr(fmt.Errorf("dial: %w", runtimes.ErrUnavailable))
	start := time.Now()
	err := p.fromRuntime(&attachment{conf: &Config{}, containerID: "web"}, f, &Workload{}, 400*time.Millisecond)
	if took := time.Since(start); errorCode(err) != CodeRuntime || took < 400*time.Millisecond || took > 2*time.Second {
		t.Errorf("runtime never answering: %v after %v; want error 108 after 400ms", err, took)
	}
}
