package cni

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// TestLabelsFromRealPodman runs Debian's Podman 4.3 (CNI backend, runc,
// the ulimits this machine needs; docs/cni.md) with its API service, the
// real plugin binary and the real agent: `podman run --label` gives the
// workload its labels, namespace and named ports; a container whose
// labels break the rules is not attached; `podman rm` removes it.
func TestLabelsFromRealPodman(t *testing.T) {
	nstest.RequireRoot(t)
	for _, c := range []string{"podman", "runc", "nsenter", "ip"} {
		nstest.RequireCommand(t, c)
	}
	// A short directory: Podman's sockets live under its run root.
	dir, err := os.MkdirTemp("", "bhcv-pm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &hostEnv{t: t, host: nstest.NS(t, verPrefix), socket: filepath.Join(dir, "agent.sock"), dataDir: filepath.Join(dir, "cni")}
	a := startRealAgent(t, e, dataplane.NewUserspace())
	pm := newPodmanEnv(t, dir, e)

	name := nstest.Name("bhcvweb")
	out, err := pm.run("--name", name, "--label", "app=web", "--label", "bulkhead.dev/namespace=shop", "--label", "bulkhead.dev/ports=http:8080/tcp")
	if err != nil {
		t.Fatalf("podman run: %v\n%s", err, out)
	}
	var got *api.WorkloadRegistration
	for _, r := range a.Workloads() {
		if r.Namespace == "shop" && r.Name == name {
			got = &r
		}
	}
	if got == nil || !maps.Equal(got.Labels, map[string]string{"app": "web"}) || len(got.Ports) != 1 ||
		got.Ports[0].Name != "http" || got.Ports[0].Port != 8080 {
		t.Fatalf("the agent holds %+v; want shop/%s with app=web and port http 8080 (all: %+v)", got, name, a.Workloads())
	}

	// A restart (DEL, then ADD without the original CNI_ARGS) keeps the
	// identity: the labels come from Podman again.
	store := &Store{Dir: filepath.Join(e.dataDir, pm.net)}
	before := pm.allocation(store, got.ContainerID)
	if out, err := pm.inHost("restart", "--time", "0", name); err != nil {
		t.Fatalf("podman restart: %v\n%s", err, out)
	}
	got = nil
	for _, r := range a.Workloads() {
		if r.Namespace == "shop" && r.Name == name {
			got = &r
		}
	}
	if after := pm.allocation(store, before.ContainerID); !after.Created.After(before.Created) {
		t.Errorf("podman restart did not attach again: allocation created %v, before %v", after.Created, before.Created)
	}
	if got == nil || !maps.Equal(got.Labels, map[string]string{"app": "web"}) {
		t.Errorf("after podman restart the agent holds %+v; want shop/%s with app=web (all: %+v)", got, name, a.Workloads())
	}

	bad := nstest.Name("bhcvbad")
	out, err = pm.run("--name", bad, "--label", "note=has spaces")
	if err == nil || !strings.Contains(out, `label note="has spaces"`) {
		t.Errorf("podman run with an invalid label = %v: %s; want the plugin's refusal naming it", err, out)
	}
	for _, r := range a.Workloads() {
		if r.Name == bad {
			t.Errorf("a container with an invalid label was registered: %+v", r)
		}
	}

	if out, err := pm.podman("rm", "-f", name); err != nil {
		t.Fatalf("podman rm: %v\n%s", err, out)
	}
	for _, r := range a.Workloads() {
		if r.Name == name {
			t.Errorf("podman rm left the workload registered: %+v", r)
		}
	}
}

// podmanEnv is a Podman of its own: its storage, run root, events log,
// CNI configuration and API service under one directory.
type podmanEnv struct {
	t                *testing.T
	dir, hostNS, net string
}

func newPodmanEnv(t *testing.T, dir string, e *hostEnv) *podmanEnv {
	t.Helper()
	pm := &podmanEnv{t: t, dir: dir, hostNS: e.host.Path(), net: "bhcvnet"}
	for _, d := range []string{"bin", "net.d", "img", "src"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(pluginBin, filepath.Join(dir, "bin", "bulkhead-cni")); err != nil {
		t.Fatal(err)
	}
	// The ulimits and runc as KERNEL-NOTES has them for this machine.
	conf := fmt.Sprintf(`[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
events_logger = "file"
events_logfile_path = "%[1]s/events.log"
tmp_dir = "%[1]s/tmp"
[network]
network_backend = "cni"
network_config_dir = "%[1]s/net.d"
cni_plugin_dirs = ["%[1]s/bin"]
`, dir)
	list := podmanNetwork(t, pm.net, e, pm.socket())
	for path, data := range map[string]string{"containers.conf": conf, "net.d/bhcvnet.conflist": list,
		"src/main.go": "package main\n\nimport \"time\"\n\nfunc main() { time.Sleep(time.Hour) }\n",
		"src/go.mod":  "module sleeper\n\ngo 1.22\n"} {
		if err := os.WriteFile(filepath.Join(dir, path), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The image: one static binary (no registry is reachable).
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "img", "sleep"), ".")
	build.Dir, build.Env = filepath.Join(dir, "src"), append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the image's binary: %v\n%s", err, out)
	}
	if out, err := exec.Command("tar", "-C", filepath.Join(dir, "img"), "-cf", filepath.Join(dir, "img.tar"), "sleep").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	if out, err := pm.podman("import", filepath.Join(dir, "img.tar"), "localhost/bhcv-sleep:1"); err != nil {
		t.Fatalf("podman import: %v\n%s", err, out)
	}
	pm.startService()
	t.Cleanup(func() {
		if out, err := pm.podman("rm", "-af"); err != nil {
			t.Errorf("cleanup: podman rm -af: %v\n%s", err, out)
		}
	})
	return pm
}

// podmanNetwork is the README's network configuration for Podman
// (examples/podman/bulkhead.conflist) with the test's names and paths.
func podmanNetwork(t *testing.T, name string, e *hostEnv, podmanSocket string) string {
	t.Helper()
	data, err := os.ReadFile("../../examples/podman/bulkhead.conflist")
	if err != nil {
		t.Fatal(err)
	}
	var list map[string]any
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatalf("examples/podman/bulkhead.conflist: %v", err)
	}
	list["name"] = name
	plugin := list["plugins"].([]any)[0].(map[string]any)
	plugin["agentSocket"], plugin["dataDir"], plugin["subnet"] = e.socket, e.dataDir, "10.89.77.0/24"
	plugin["labelsFrom"].(map[string]any)["socket"] = podmanSocket
	out, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// allocation is the IPAM allocation of the container's eth0.
func (pm *podmanEnv) allocation(store *Store, containerID string) *Allocation {
	pm.t.Helper()
	st, err := store.Read()
	if err != nil {
		pm.t.Fatal(err)
	}
	a := st.Allocations[allocKey(containerID, "eth0")]
	if a == nil {
		pm.t.Fatalf("no allocation for container %s: %+v", containerID, st.Allocations)
	}
	return a
}

func (pm *podmanEnv) socket() string { return filepath.Join(pm.dir, "podman.sock") }

func (pm *podmanEnv) cmd(argv ...string) *exec.Cmd {
	base := []string{"--root", filepath.Join(pm.dir, "root"), "--runroot", filepath.Join(pm.dir, "run"), "--storage-driver", "vfs"}
	c := exec.Command("podman", append(base, argv...)...)
	c.Env = append(os.Environ(), "CONTAINERS_CONF="+filepath.Join(pm.dir, "containers.conf"))
	return c
}

func (pm *podmanEnv) podman(argv ...string) (string, error) {
	out, err := pm.cmd(argv...).CombinedOutput()
	return string(out), err
}

// run starts a container on the test's network in the test's host
// namespace.
func (pm *podmanEnv) run(args ...string) (string, error) {
	argv := append([]string{"run", "-d", "--network", pm.net}, args...)
	return pm.inHost(append(argv, "--entrypoint", "/sleep", "localhost/bhcv-sleep:1")...)
}

// inHost runs podman in the test's host namespace (nsenter keeps
// Podman's /run/netns bind mounts visible; ip netns exec would hide them).
func (pm *podmanEnv) inHost(argv ...string) (string, error) {
	c := pm.cmd(argv...)
	c.Args = append([]string{"nsenter", "--net=" + pm.hostNS, c.Path}, c.Args[1:]...)
	c.Path = mustLook(pm.t, "nsenter")
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	return out.String(), err
}

func mustLook(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startService runs `podman system service` on the test's socket until
// the test ends, and waits until it answers.
func (pm *podmanEnv) startService() {
	t := pm.t
	t.Helper()
	svc := pm.cmd("system", "service", "--time=0", "unix://"+pm.socket())
	var log bytes.Buffer
	svc.Stdout, svc.Stderr = &log, &log
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Wait() }()
	t.Cleanup(func() {
		svc.Process.Kill()
		<-done
	})
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", pm.socket())
	}}}
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("podman system service exited: %v\n%s", err, log.String())
		case <-tick.C:
		}
		if resp, err := client.Get("http://d/v4.0.0/libpod/_ping"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
	}
	t.Fatalf("podman system service did not answer on %s within 30 s\n%s", pm.socket(), log.String())
}
