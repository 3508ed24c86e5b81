package cni

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// TestLabelsFromRealContainerdCRI runs containerd 1.6's CRI (as the
// kubelet drives it, through the CRI's gRPC API) with the real plugin
// and agent: a pod's labels, on its sandbox container in namespace
// k8s.io, reach the workload, named by K8S_POD_NAMESPACE/NAME; the
// policy holds between two pods; StopPodSandbox unregisters the pod.
func TestLabelsFromRealContainerdCRI(t *testing.T) {
	nstest.RequireRoot(t)
	for _, c := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "unshare", "nsenter", "mount", "ip"} {
		nstest.RequireCommand(t, c)
	}
	// The CRI runs the loopback plugin before the network's own.
	if _, err := os.Stat(criLoopback); err != nil {
		nstest.Missing(t, "needs the CNI loopback plugin "+criLoopback+" (Debian: containernetworking-plugins)")
	}
	dir, err := os.MkdirTemp("", ctrdPrefix+"-cri-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &hostEnv{t: t, host: nstest.NS(t, ctrdPrefix), socket: filepath.Join(dir, "agent.sock"), dataDir: filepath.Join(dir, "cni")}
	dp, err := nft.New(nft.Options{NetNS: e.host.Path()})
	if err != nil {
		t.Fatal(err)
	}
	a := startRealAgent(t, e, dp)
	cri := newCRIEnv(t, dir, e)

	db := cri.runPod("db", map[string]string{"app": "db", "bulkhead.dev/ports": "pg:5432/tcp"})
	web := cri.runPod("web", map[string]string{"app": "web"})
	other := cri.runPod("other", map[string]string{"app": "other"})
	regs := map[string]api.WorkloadRegistration{}
	for name, id := range map[string]string{"db": db, "web": web, "other": other} {
		var r api.WorkloadRegistration
		for _, w := range a.Workloads() {
			if w.ContainerID == id {
				r = w
			}
		}
		if r.Namespace != "shop" || r.Name != name || r.Labels["app"] != name || r.Labels["io.cri-containerd.kind"] != "sandbox" {
			t.Errorf("pod %s (sandbox %s) registered as %+v; want shop/%s with app=%s and the CRI's io.cri-containerd.kind=sandbox",
				name, id, r, name, name)
		}
		regs[name] = r
	}
	if t.Failed() {
		t.FailNow()
	}
	if p := regs["db"].Ports; len(p) != 1 || p[0].Name != "pg" || p[0].Port != 5432 {
		t.Errorf("db's named ports %+v; want pg 5432", p)
	}

	// Real connections between the pods' namespaces (the sandbox task's).
	dbNS, webNS, otherNS := cri.sandboxNetNS(db), cri.sandboxNetNS(web), cri.sandboxNetNS(other)
	var ln net.Listener
	if err := netns.DoPath(dbNS, func() (err error) {
		ln, err = net.Listen("tcp", ":5432")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dial := func(from string, timeout time.Duration) error {
		return netns.DoPath(from, func() error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(regs["db"].IPs[0], "5432"), timeout)
			if err == nil {
				c.Close()
			}
			return err
		})
	}
	if err := dial(webNS, 3*time.Second); err != nil {
		t.Errorf("web -> db:5432: %v; the policy allows it", err)
	}
	if err := dial(otherNS, 500*time.Millisecond); err == nil {
		t.Error("other -> db:5432 connected; the policy denies it")
	}

	// Stopping the pod is the CRI's DEL.
	cri.stopPod(web)
	for _, w := range a.Workloads() {
		if w.ContainerID == web {
			t.Errorf("StopPodSandbox left the pod registered: %+v", w)
		}
	}
}

// criEnv is a containerd of its own with its CRI, run in the test's
// host network namespace (the CRI runs the CNI plugin itself) and a
// private mount namespace, its network namespaces under its state
// directory.
type criEnv struct {
	*containerdEnv
	client runtimeapi.RuntimeServiceClient
	images runtimeapi.ImageServiceClient
	pods   []string
}

const (
	criPause    = "localhost/bhct-pause:1"
	criLoopback = "/usr/lib/cni/loopback"
)

func newCRIEnv(t *testing.T, dir string, e *hostEnv) *criEnv {
	t.Helper()
	cd := &containerdEnv{t: t, dir: dir, ns: "k8s.io", hostNS: e.host.Path(), net: nstest.Name(ctrdPrefix + "n"),
		netD: filepath.Join(dir, "net.d"), binDir: filepath.Join(dir, "bin"), cgroup: nstest.Name(ctrdPrefix + "-")}
	// In a private mount namespace where /var/lib/cni (libcni's cache)
	// is the test's, and the CRI's mounts of its network namespaces go
	// with it.
	cd.daemon = []string{"unshare", "-m", "--propagation", "private", "/bin/sh", filepath.Join(dir, "daemon.sh"),
		filepath.Join(dir, "cache"), filepath.Join(dir, "mnt"), cd.hostNS, "containerd", "--config", filepath.Join(dir, "config.toml")}
	for _, d := range []string{"bin", "net.d", "cache", "mnt", "src", "runc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range map[string]string{"bulkhead-cni": pluginBin, "loopback": criLoopback} {
		if err := os.Symlink(target, filepath.Join(cd.binDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf(`version = 2
root = "%[1]s/root"
state = "%[1]s/state"
[grpc]
  address = "%[1]s/containerd.sock"
[ttrpc]
  address = "%[1]s/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[2]q
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "%[1]s/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "%[1]s/bin"
    conf_dir = "%[1]s/net.d"
    max_conf_num = 1
`, dir, criPause)
	list := fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q,
 "plugins": [{"type": "bulkhead-cni", "agentSocket": %q, "subnet": "10.89.79.0/24", "dataDir": %q,
              "labelsFrom": {"runtime": "containerd", "socket": %q, "namespace": "k8s.io"}}]}`,
		cd.net, e.socket, e.dataDir, cd.socket())
	daemon := "#!/bin/sh\nset -e\ncache=$1 work=$2 host=$3\nshift 3\n" + mountSee + "\nsee \"$cache\" /var/lib/cni\nexec nsenter --net=\"$host\" \"$@\"\n"
	for path, data := range map[string]string{"config.toml": conf, "ctr.sh": ctrWrapper, "daemon.sh": daemon, "net.d/10-bhct.conflist": list,
		"src/main.go": containerdBox, "src/go.mod": "module box\n\ngo 1.22\n"} {
		if err := os.WriteFile(filepath.Join(dir, path), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	buildBox(t, filepath.Join(dir, "src"), filepath.Join(dir, "box"))
	archive := filepath.Join(dir, "pause.tar")
	writeImageArchive(t, filepath.Join(dir, "box"), archive)
	cd.start()
	cd.ctr("images", "import", archive)

	conn, err := grpc.NewClient("unix://"+cd.socket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c := &criEnv{containerdEnv: cd, client: runtimeapi.NewRuntimeServiceClient(conn), images: runtimeapi.NewImageServiceClient(conn)}
	// Registered after start's cleanup, so it runs before containerd stops.
	t.Cleanup(func() {
		for _, id := range c.pods {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			c.client.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
			if _, err := c.client.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
				t.Logf("cleanup: remove pod sandbox %s: %v", id, err)
			}
			cancel()
		}
		conn.Close()
	})
	c.waitReady()
	return c
}

// waitReady waits (at most 30 s) until the CRI has the pause image and
// its network is ready.
func (c *criEnv) waitReady() {
	c.t.Helper()
	var last string
	for i := 0; i < 300; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		img, ierr := c.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: criPause}})
		st, serr := c.client.Status(ctx, &runtimeapi.StatusRequest{})
		cancel()
		ready := ierr == nil && serr == nil && img.GetImage() != nil
		for _, cond := range st.GetStatus().GetConditions() {
			ready = ready && cond.GetStatus()
		}
		if ready {
			return
		}
		last = fmt.Sprintf("image %v (%v), status %v (%v)", img.GetImage() != nil, ierr, st.GetStatus(), serr)
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("the CRI is not ready within 30 s: %s", last)
}

// runPod runs a pod sandbox named name in Kubernetes namespace shop with
// labels, and returns its id.
func (c *criEnv) runPod(name string, labels map[string]string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := c.client.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "shop", Uid: nstest.Name("uid")},
		Labels:   labels,
		Linux:    &runtimeapi.LinuxPodSandboxConfig{CgroupParent: "/" + c.cgroup},
	}})
	if err != nil {
		c.t.Fatalf("RunPodSandbox %s: %v", name, err)
	}
	c.pods = append(c.pods, resp.PodSandboxId)
	return resp.PodSandboxId
}

func (c *criEnv) stopPod(id string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.client.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		c.t.Fatalf("StopPodSandbox %s: %v", id, err)
	}
}

// sandboxNetNS is the network namespace of the pod's sandbox task (the
// CRI's own mount of it lives under its state directory).
func (c *criEnv) sandboxNetNS(id string) string {
	c.t.Helper()
	return c.netNS(id)
}

// writeImageArchive writes a Docker image archive (what `ctr images
// import` reads) of one layer holding bin as /box, its entrypoint,
// tagged criPause.
func writeImageArchive(t *testing.T, bin, archive string) {
	t.Helper()
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	tw.WriteHeader(&tar.Header{Name: "box", Mode: 0o755, Size: int64(len(data)), ModTime: time.Unix(0, 0)})
	tw.Write(data)
	tw.Close()
	sum := sha256.Sum256(layer.Bytes())
	config, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/box"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(sum[:])}}})
	manifest, _ := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{criPause}, "Layers": []string{"layer.tar"}}})
	var out bytes.Buffer
	aw := tar.NewWriter(&out)
	for _, f := range []struct {
		name string
		data []byte
	}{{"layer.tar", layer.Bytes()}, {"config.json", config}, {"manifest.json", manifest}} {
		aw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: time.Unix(0, 0)})
		aw.Write(f.data)
	}
	aw.Close()
	if err := os.WriteFile(archive, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
