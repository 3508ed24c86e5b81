package cni

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// ctrdPrefix names what the containerd test creates: its network
// namespaces, containerd namespace, temporary directory and network.
const ctrdPrefix = "bhct"

// TestLabelsFromRealContainerd runs Debian's containerd 1.6 (its own
// root, state, socket and configuration in a temporary directory) and
// `ctr run --cni`, with the real plugin binary and the real agent with
// the nftables dataplane in a throwaway host namespace: `ctr run --label`
// gives the workload its labels, namespace and named ports from
// containerd's API; the policy holds between the containers (real
// connections); a restarted container keeps its identity; removal
// cleans up, with a DEL (a foreground `ctr run`) and without one
// (`ctr run -d` never calls it); a container whose labels cannot be
// read is not attached.
func TestLabelsFromRealContainerd(t *testing.T) {
	nstest.RequireRoot(t)
	for _, c := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "unshare", "nsenter", "mount", "ip"} {
		nstest.RequireCommand(t, c)
	}
	dir, err := os.MkdirTemp("", ctrdPrefix+"-ctrd-")
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
	cd := newContainerdEnv(t, dir, e)
	regs, db := cd.attachShop(a)
	cd.restartKeepsIdentity(a, regs["web"], regs["db"].IPs[0])
	cd.removal(a, e, db)
	cd.unreadable(a, e)
}

// shopLabel is the ctr flag giving a container the namespace shop.
var shopLabel = []string{"--label", "bulkhead.dev/namespace=shop"}

// attachShop runs db (under a foreground `ctr run --cni`, which calls
// DEL when its task ends; the channel closes when it ends), web and
// other (detached), checks their registrations and the policy between
// them.
func (cd *containerdEnv) attachShop(a *agent.Agent) (map[string]api.WorkloadRegistration, <-chan struct{}) {
	t := cd.t
	t.Helper()
	// db under a foreground `ctr run --cni`, which calls DEL when its
	// task ends; web and other detached.
	db := cd.runForeground("db", append(shopLabel, "--label", "app=db", "--label", "bulkhead.dev/ports=pg:5432/tcp"), "5432", "8080")
	cd.mustRun("web", append(shopLabel, "--label", "app=web"))
	cd.mustRun("other", append(shopLabel, "--label", "app=other"))
	regs := map[string]api.WorkloadRegistration{}
	for _, id := range []string{"db", "web", "other"} {
		regs[id] = cd.registered(a, id)
		if regs[id].Namespace != "shop" || !maps.Equal(regs[id].Labels, map[string]string{"app": id}) {
			t.Errorf("%s registered as %+v; want shop/%s with app=%s", id, regs[id], cd.fullID(id), id)
		}
	}
	if p := regs["db"].Ports; len(p) != 1 || p[0] != (api.NamedPort{Name: "pg", Port: 5432, Protocol: "tcp"}) {
		t.Errorf("db's named ports %+v; want pg 5432/tcp", p)
	}
	dbAddr := regs["db"].IPs[0]
	cd.wantDial("web", dbAddr, "5432", true)
	cd.wantDial("web", dbAddr, "8080", false)
	cd.wantDial("other", dbAddr, "5432", false)
	return regs, db
}

// restartKeepsIdentity restarts web's task.
func (cd *containerdEnv) restartKeepsIdentity(a *agent.Agent, web api.WorkloadRegistration, dbAddr string) {
	t := cd.t
	t.Helper()
	// Restart: ctr cannot start a task with CNI again, so the ADD after
	// the new task starts is made as ctr's library (go-cni over libcni)
	// makes it: CNI_CONTAINERID NAMESPACE-ID, no CNI_ARGS. The identity
	// comes from containerd again; the dead attachment of the old task
	// (no DEL) does not stand in the way.
	cd.ctr("task", "kill", "-s", "SIGKILL", "web")
	cd.waitStopped("web")
	cd.ctr("task", "rm", "web")
	cd.ctr("task", "start", "-d", "--fifo-dir", filepath.Join(cd.dir, "fifo"), "web")
	if _, err := cd.libcniAdd("web"); err != nil {
		t.Fatalf("ADD after the restart: %v", err)
	}
	if r := cd.registered(a, "web"); r.Namespace != "shop" || !maps.Equal(r.Labels, map[string]string{"app": "web"}) || r.Interface != web.Interface {
		t.Errorf("after the restart web is %+v; want shop/%s with app=web on %s", r, cd.fullID("web"), web.Interface)
	}
	cd.wantDial("web", dbAddr, "5432", true)
}

// removal removes db, whose ctr run calls DEL, and other, whose does not.
func (cd *containerdEnv) removal(a *agent.Agent, e *hostEnv, db <-chan struct{}) {
	t := cd.t
	t.Helper()
	// Removal with DEL: the foreground ctr run ends with its task.
	cd.ctr("task", "kill", "-s", "SIGKILL", "db")
	select {
	case <-db:
	case <-time.After(30 * time.Second):
		t.Fatal("ctr run for db did not end within 30 s of its task's kill")
	}
	cd.unregistered(a, "db")

	// Removal without DEL (`ctr run -d`, then kill and rm): the next ADD
	// of the network finds the attachment dead and removes it.
	cd.ctr("task", "kill", "-s", "SIGKILL", "other")
	cd.waitStopped("other")
	cd.ctr("task", "rm", "other")
	cd.ctr("container", "rm", "other")
	cd.mustRun("late", append(shopLabel, "--label", "app=late"))
	cd.unregistered(a, "other")
	st := e.state()
	for _, id := range []string{"db", "other"} {
		if al := st.Allocations[allocKey(cd.fullID(id), "eth0")]; al != nil {
			t.Errorf("%s is removed, its allocation %+v is not", id, al)
		}
	}
}

// unreadable runs containers whose labels cannot be read.
func (cd *containerdEnv) unreadable(a *agent.Agent, e *hostEnv) {
	t := cd.t
	t.Helper()
	// Labels that cannot be read: an invalid one, and a container the
	// configured containerd namespace does not hold.
	out, err := cd.run("bad", []string{"--label", "note=has spaces"})
	if err == nil || !strings.Contains(out, `label note="has spaces"`) {
		t.Errorf("ctr run with an invalid label = %v: %s; want the plugin's refusal naming it", err, out)
	}
	cd.netD = cd.otherNetD
	start := time.Now()
	out, err = cd.run("ghost", []string{"--label", "app=web"})
	if err == nil || !strings.Contains(out, "no such container") || time.Since(start) < time.Second {
		t.Errorf("ctr run with labelsFrom naming another namespace = %v after %v: %s; want refused after waiting 1 s", err, time.Since(start), out)
	}
	for _, r := range a.Workloads() {
		if r.Name == cd.fullID("bad") || r.Name == cd.fullID("ghost") {
			t.Errorf("a container whose labels could not be read was registered: %+v", r)
		}
	}
	for _, id := range []string{"bad", "ghost"} {
		if al := e.state().Allocations[allocKey(cd.fullID(id), "eth0")]; al != nil {
			t.Errorf("refused %s left its allocation %+v", id, al)
		}
	}
}

// containerdEnv is a containerd of its own: root, state, socket and
// configuration under one directory, its containers in one containerd
// namespace, and ctr run so that it sees this test's CNI configuration
// and plugin (in a private mount namespace) and attaches in the test's
// host network namespace.
type containerdEnv struct {
	t                       *testing.T
	dir, ns, hostNS, net    string
	netD, otherNetD, binDir string
	// daemon is containerd's command line (default: containerd with the
	// directory's config.toml); cgroup the name of the cgroups its
	// containers make (default: ns), removed at the end.
	daemon []string
	cgroup string
}

// containerdBox is the containers' program: it accepts (and closes)
// connections on the TCP ports it is given, and otherwise sleeps.
const containerdBox = `package main

import (
	"net"
	"os"
	"time"
)

func main() {
	for _, port := range os.Args[1:] {
		l, err := net.Listen("tcp", ":"+port)
		if err != nil {
			panic(err)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	time.Sleep(time.Hour)
}
`

// ctrWrapper runs ctr in a private mount namespace (unshare -m) where
// /etc/cni/net.d, /opt/cni/bin and /var/lib/cni are this test's (ctr
// reads only the first configuration list there, and libcni caches its
// results in the last), inside the test's host network namespace. A
// missing directory is made in an overlay of its nearest existing
// parent, so nothing of the host's files changes (one overlay per call:
// an overlay's work directory serves one mount at a time).
const ctrWrapper = `#!/bin/sh
set -e
netd=$1 bin=$2 cache=$3 work=$4 host=$5 sock=$6
shift 6
` + mountSee + `
see "$netd" /etc/cni/net.d
see "$bin" /opt/cni/bin
see "$cache" /var/lib/cni
exec nsenter --net="$host" ctr --address "$sock" "$@"
`

// mountSee is the shell function "see SRC DST": DST shows SRC in this
// mount namespace.
const mountSee = `see() {
	if [ ! -d "$2" ]; then
		a=$(dirname "$2")
		while [ ! -d "$a" ]; do a=$(dirname "$a"); done
		w=$(mktemp -d "$work/overlay.XXXXXX")
		mkdir "$w/up" "$w/wk"
		mount -t overlay bhct -o "lowerdir=$a,upperdir=$w/up,workdir=$w/wk" "$a"
		mkdir -p "$2"
	fi
	mount --bind "$1" "$2"
}`

func newContainerdEnv(t *testing.T, dir string, e *hostEnv) *containerdEnv {
	t.Helper()
	b := make([]byte, 4)
	for i := range b {
		b[i] = byte(rand.N(256))
	}
	// A namespace with '-': the plugin must read NAMESPACE-ID right.
	cd := &containerdEnv{t: t, dir: dir, ns: ctrdPrefix + "-" + hex.EncodeToString(b), hostNS: e.host.Path(), net: nstest.Name(ctrdPrefix + "n"),
		netD: filepath.Join(dir, "net.d"), otherNetD: filepath.Join(dir, "net.d-other"), binDir: filepath.Join(dir, "bin")}
	for _, d := range []string{"bin", "net.d", "net.d-other", "cache", "mnt", "rootfs", "src", "libcni"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(pluginBin, filepath.Join(cd.binDir, "bulkhead-cni")); err != nil {
		t.Fatal(err)
	}
	list := func(labelsFrom string) string {
		return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q,
 "plugins": [{"type": "bulkhead-cni", "agentSocket": %q, "subnet": "10.89.78.0/24", "dataDir": %q,
              "labelsFrom": %s}]}`, cd.net, e.socket, e.dataDir, labelsFrom)
	}
	conf := fmt.Sprintf(`version = 2
root = "%[1]s/root"
state = "%[1]s/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "%[1]s/containerd.sock"
[ttrpc]
  address = "%[1]s/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
`, dir)
	for path, data := range map[string]string{
		"config.toml":            conf,
		"ctr.sh":                 ctrWrapper,
		"net.d/10-bhct.conflist": list(fmt.Sprintf(`{"runtime": "containerd", "socket": %q}`, cd.socket())),
		"net.d-other/10-bhct.conflist": list(fmt.Sprintf(`{"runtime": "containerd", "socket": %q, "namespace": "%s-none", "timeout": "1s"}`,
			cd.socket(), ctrdPrefix)),
		"src/main.go": containerdBox,
		"src/go.mod":  "module box\n\ngo 1.22\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, path), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	buildBox(t, filepath.Join(dir, "src"), filepath.Join(dir, "rootfs", "box"))
	cd.start()
	return cd
}

// buildBox builds containerdBox, whose source is in src, as a static
// binary: the containers' root file system (no registry is reachable).
func buildBox(t *testing.T, src, out string) {
	t.Helper()
	build := exec.Command("go", "build", "-o", out, ".")
	build.Dir, build.Env = src, append(os.Environ(), "CGO_ENABLED=0", "GOTOOLCHAIN=local")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the containers' binary: %v\n%s", err, b)
	}
}

func (cd *containerdEnv) socket() string { return filepath.Join(cd.dir, "containerd.sock") }

// fullID is the CNI_CONTAINERID ctr passes for container id: NAMESPACE-ID.
func (cd *containerdEnv) fullID(id string) string { return cd.ns + "-" + id }

// start runs containerd until the test ends, and waits until it answers.
// At the end it removes every task and container of the test's
// namespace, stops containerd and removes the empty cgroups runc left
// (runc's state and ctr's FIFOs are in the test's directory).
func (cd *containerdEnv) start() {
	t := cd.t
	t.Helper()
	argv := cd.daemon
	if argv == nil {
		argv = []string{"containerd", "--config", filepath.Join(cd.dir, "config.toml")}
	}
	daemon := exec.Command(argv[0], argv[1:]...)
	var log bytes.Buffer
	daemon.Stdout, daemon.Stderr = &log, &log
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- daemon.Wait() }()
	t.Cleanup(func() {
		cd.removeAll()
		daemon.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			daemon.Process.Kill()
			<-done
		}
		group := cmp.Or(cd.cgroup, cd.ns)
		cgroups, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", group))
		if unified := filepath.Join("/sys/fs/cgroup", group); dirExists(unified) {
			cgroups = append(cgroups, unified)
		}
		for _, g := range cgroups {
			if err := os.Remove(g); err != nil {
				t.Logf("cleanup: cgroup %s: %v", g, err)
			}
		}
		if t.Failed() {
			t.Logf("containerd's log:\n%s", log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("containerd exited: %v\n%s", err, log.String())
		case <-time.After(100 * time.Millisecond):
		}
		if exec.Command("ctr", "--address", cd.socket(), "version").Run() == nil {
			return
		}
	}
	t.Fatalf("containerd did not answer on %s within 30 s\n%s", cd.socket(), log.String())
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// removeAll kills and removes every task and container of the test's
// namespace, then the namespace.
func (cd *containerdEnv) removeAll() {
	list := func(what string) []string {
		out, err := cd.command(context.Background(), "-n", cd.ns, what, "ls", "-q").Output()
		if err != nil {
			return nil
		}
		return strings.Fields(string(out))
	}
	for _, id := range list("task") {
		cd.command(context.Background(), "-n", cd.ns, "task", "kill", "-s", "SIGKILL", id).Run()
	}
	for _, id := range list("task") {
		for i := 0; i < 50 && cd.taskStatus(id) == "RUNNING"; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		if out, err := cd.command(context.Background(), "-n", cd.ns, "task", "rm", "-f", id).CombinedOutput(); err != nil {
			cd.t.Logf("cleanup: ctr task rm %s: %v: %s", id, err, out)
		}
	}
	for _, id := range list("container") {
		if out, err := cd.command(context.Background(), "-n", cd.ns, "container", "rm", id).CombinedOutput(); err != nil {
			cd.t.Logf("cleanup: ctr container rm %s: %v: %s", id, err, out)
		}
	}
	cd.command(context.Background(), "namespaces", "rm", cd.ns).Run()
}

// command is ctr with argv, in the private mount namespace and the
// test's host network namespace, seeing the network configuration in
// cd.netD.
func (cd *containerdEnv) command(ctx context.Context, argv ...string) *exec.Cmd {
	args := []string{"-m", "--propagation", "private", "/bin/sh", filepath.Join(cd.dir, "ctr.sh"),
		cd.netD, cd.binDir, filepath.Join(cd.dir, "cache"), filepath.Join(cd.dir, "mnt"), cd.hostNS, cd.socket()}
	return exec.CommandContext(ctx, "unshare", append(args, argv...)...)
}

// ctr runs ctr in the test's namespace and fails the test when it fails.
func (cd *containerdEnv) ctr(argv ...string) string {
	cd.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := cd.command(ctx, append([]string{"-n", cd.ns}, argv...)...).CombinedOutput()
	if err != nil {
		cd.t.Fatalf("ctr %v: %v\n%s", argv, err, out)
	}
	return string(out)
}

// run is `ctr run -d --cni` of the box as container id with ctr's flags
// (labels) and the ports the box listens on.
func (cd *containerdEnv) run(id string, flags []string, ports ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// --rootfs makes the first argument a directory, not an image.
	argv := append(append([]string{"-n", cd.ns, "run", "-d", "--cni", "--fifo-dir", filepath.Join(cd.dir, "fifo"), "--runc-root", filepath.Join(cd.dir, "runc")}, flags...), "--rootfs", filepath.Join(cd.dir, "rootfs"), id, "/box")
	out, err := cd.command(ctx, append(argv, ports...)...).CombinedOutput()
	return string(out), err
}

func (cd *containerdEnv) mustRun(id string, flags []string, ports ...string) {
	cd.t.Helper()
	if out, err := cd.run(id, flags, ports...); err != nil {
		cd.t.Fatalf("ctr run %s: %v\n%s", id, err, out)
	}
}

// runForeground is `ctr run --cni` (not detached) in the background; the
// channel is closed when ctr ends.
func (cd *containerdEnv) runForeground(id string, flags []string, ports ...string) <-chan struct{} {
	cd.t.Helper()
	argv := append(append([]string{"-n", cd.ns, "run", "--cni", "--null-io", "--fifo-dir", filepath.Join(cd.dir, "fifo"), "--runc-root", filepath.Join(cd.dir, "runc")}, flags...), "--rootfs", filepath.Join(cd.dir, "rootfs"), id, "/box")
	c := cd.command(context.Background(), append(argv, ports...)...)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		cd.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		c.Wait()
		close(done)
	}()
	cd.t.Cleanup(func() {
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			c.Process.Kill()
			<-done
		}
		if cd.t.Failed() {
			cd.t.Logf("ctr run %s:\n%s", id, out.String())
		}
	})
	return done
}

// taskStatus is the status ctr shows for id's task ("" without one).
func (cd *containerdEnv) taskStatus(id string) string {
	f := cd.taskFields(id)
	if len(f) < 3 {
		return ""
	}
	return f[2]
}

func (cd *containerdEnv) taskFields(id string) []string {
	out, _ := cd.command(context.Background(), "-n", cd.ns, "task", "ls").Output()
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == id {
			return f
		}
	}
	return nil
}

func (cd *containerdEnv) waitStopped(id string) {
	cd.t.Helper()
	for i := 0; i < 100; i++ {
		if cd.taskStatus(id) == "STOPPED" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	cd.t.Fatalf("task %s did not stop within 10 s (status %q)", id, cd.taskStatus(id))
}

// netNS is the network namespace of id's running task.
func (cd *containerdEnv) netNS(id string) string {
	cd.t.Helper()
	f := cd.taskFields(id)
	if len(f) < 3 || f[2] != "RUNNING" {
		cd.t.Fatalf("container %s has no running task: %v", id, f)
	}
	if _, err := strconv.Atoi(f[1]); err != nil {
		cd.t.Fatalf("container %s: pid %q", id, f[1])
	}
	return "/proc/" + f[1] + "/ns/net"
}

// registered waits (at most 30 s) for the agent to hold id's workload.
func (cd *containerdEnv) registered(a *agent.Agent, id string) api.WorkloadRegistration {
	cd.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range a.Workloads() {
			if r.ContainerID == cd.fullID(id) {
				return r
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	cd.t.Fatalf("the agent did not register container %s within 30 s: %+v", cd.fullID(id), a.Workloads())
	return api.WorkloadRegistration{}
}

// unregistered waits (at most 10 s) for the agent to forget id's workload.
func (cd *containerdEnv) unregistered(a *agent.Agent, id string) {
	cd.t.Helper()
	for i := 0; ; i++ {
		held := false
		for _, r := range a.Workloads() {
			held = held || r.ContainerID == cd.fullID(id)
		}
		if !held {
			return
		}
		if i == 200 {
			cd.t.Errorf("the agent still holds container %s after 10 s: %+v", cd.fullID(id), a.Workloads())
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wantDial connects from container from's namespace to addr:port.
func (cd *containerdEnv) wantDial(from, addr, port string, connects bool) {
	cd.t.Helper()
	timeout := 3 * time.Second
	if !connects {
		timeout = 500 * time.Millisecond
	}
	err := netns.DoPath(cd.netNS(from), func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, port), timeout)
		if err == nil {
			c.Close()
		}
		return err
	})
	switch {
	case connects && err != nil:
		cd.t.Errorf("%s -> %s:%s: %v; the policy allows it", from, addr, port, err)
	case !connects && err == nil:
		cd.t.Errorf("%s -> %s:%s connected; the policy denies it", from, addr, port)
	}
}

// libcniAdd attaches id's running task as ctr's CNI library does: the
// first configuration list, CNI_CONTAINERID NAMESPACE-ID, interface
// eth0, no arguments; the plugin runs in the test's host namespace.
func (cd *containerdEnv) libcniAdd(id string) (any, error) {
	cd.t.Helper()
	wrapper := fmt.Sprintf("#!/bin/sh\nexec nsenter --net=%s %s \"$@\"\n", cd.hostNS, pluginBin)
	if err := os.WriteFile(filepath.Join(cd.dir, "libcni", "bulkhead-cni"), []byte(wrapper), 0o755); err != nil {
		cd.t.Fatal(err)
	}
	list, err := libcni.ConfListFromFile(filepath.Join(cd.netD, "10-bhct.conflist"))
	if err != nil {
		cd.t.Fatal(err)
	}
	cninet := libcni.NewCNIConfigWithCacheDir([]string{filepath.Join(cd.dir, "libcni")}, filepath.Join(cd.dir, "cache"), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return cninet.AddNetworkList(ctx, list, &libcni.RuntimeConf{ContainerID: cd.fullID(id), NetNS: cd.netNS(id), IfName: "eth0"})
}
