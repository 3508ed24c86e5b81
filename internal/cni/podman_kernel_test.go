package cni

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// TestPodmanEnforcedInTheKernel is the end-to-end case with
// Podman: containers labelled with `podman run --label` (one named with
// upper case and '_', one with Podman's generated name), the real plugin,
// the real agent and the nftables dataplane; the policy is enforced
// between the containers' own network namespaces, a restarted container
// keeps its identity and its policy, and `podman rm` unregisters it.
func TestPodmanEnforcedInTheKernel(t *testing.T) {
	nstest.RequireRoot(t)
	for _, c := range []string{"podman", "runc", "nsenter", "ip"} {
		nstest.RequireCommand(t, c)
	}
	dir, err := os.MkdirTemp("", "bhcv-pk-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &hostEnv{t: t, host: nstest.NS(t, verPrefix), socket: filepath.Join(dir, "agent.sock"), dataDir: filepath.Join(dir, "cni")}
	dp, err := nft.New(nft.Options{NetNS: e.host.Path()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nft.Cleanup(e.host.Path()) })
	a := startRealAgent(t, e, dp)
	pm := newPodmanEnv(t, dir, e)

	dbName := nstest.Name("Bhcv_DB_")
	shop := []string{"--label", "bulkhead.dev/namespace=shop"}
	if out, err := pm.run(append([]string{"--name", dbName, "--label", "app=db", "--label", "bulkhead.dev/ports=pg:5432/tcp"}, shop...)...); err != nil {
		t.Fatalf("podman run db: %v\n%s", err, out)
	}
	webID := pm.runID(append([]string{"--label", "app=web"}, shop...)...)
	otherID := pm.runID(append([]string{"--label", "app=other"}, shop...)...)

	db := pm.registered(a, dbName)
	if want := strings.ToLower(strings.ReplaceAll(dbName, "_", "-")); db.Name != want || db.RuntimeName != dbName {
		t.Errorf("db registered as %s (runtime name %q); want %s (runtime name %q)", db.Name, db.RuntimeName, want, dbName)
	}
	webName := pm.inspect(webID, "{{.Name}}")
	web := pm.registered(a, webName)
	if !strings.Contains(webName, "_") || web.RuntimeName != webName || web.Name != strings.ReplaceAll(webName, "_", "-") {
		t.Errorf("Podman's generated name %q registered as %s (runtime name %q)", webName, web.Name, web.RuntimeName)
	}
	if web.Namespace != "shop" || web.Labels["app"] != "web" {
		t.Errorf("web registered as %+v; want shop with app=web", web)
	}

	serve := func() string {
		addr := pm.registered(a, dbName).IPs[0]
		listen(t, pm.inspect(dbName, "{{.NetworkSettings.SandboxKey}}"), addr, "5432", "8080")
		return addr
	}
	dbAddr := serve()
	check := func(when string) {
		t.Helper()
		for _, c := range []struct {
			from, port string
			want       bool
		}{{webID, "5432", true}, {webID, "8080", false}, {otherID, "5432", false}} {
			err := dialPath(pm.inspect(c.from, "{{.NetworkSettings.SandboxKey}}"), dbAddr, c.port, c.want)
			if (err == nil) != c.want {
				t.Errorf("%s: %s -> db:%s = %v; want connected %v", when, pm.inspect(c.from, "{{.Name}}"), c.port, err, c.want)
			}
		}
	}
	// The README finds a container's address this way.
	if got := pm.inspect(dbName, "{{.NetworkSettings.Networks."+pm.net+".IPAddress}}"); got != dbAddr {
		t.Errorf("podman inspect shows db at %q; the agent holds %s", got, dbAddr)
	}
	check("first start")

	if out, err := pm.inHost("network", "reload", dbName); err != nil {
		t.Fatalf("podman network reload: %v\n%s", err, out)
	}
	if r := pm.registered(a, dbName); r.Namespace != "shop" || r.Labels["app"] != "db" || len(r.Ports) != 1 {
		t.Errorf("after podman network reload db is registered as %+v; want shop/%s with app=db and port pg", r, db.Name)
	}
	// The same network namespace, so the listeners stay, on the same
	// address if the plugin gave it again.
	if again := pm.registered(a, dbName).IPs[0]; again != dbAddr {
		dbAddr = serve()
	}
	check("after podman network reload")

	if out, err := pm.inHost("restart", "--time", "0", dbName); err != nil {
		t.Fatalf("podman restart: %v\n%s", err, out)
	}
	if r := pm.registered(a, dbName); r.Namespace != "shop" || r.Labels["app"] != "db" || len(r.Ports) != 1 {
		t.Errorf("after podman restart db is registered as %+v; want shop/%s with app=db and port pg", r, db.Name)
	}
	dbAddr = serve()
	check("after podman restart")

	if out, err := pm.podman("rm", "-f", webID); err != nil {
		t.Fatalf("podman rm: %v\n%s", err, out)
	}
	for _, r := range a.Workloads() {
		if r.Name == web.Name {
			t.Errorf("podman rm left %s registered", r.Name)
		}
	}
}

// runID starts a container without a name (Podman generates one) and
// returns its id.
func (pm *podmanEnv) runID(args ...string) string {
	pm.t.Helper()
	out, err := pm.run(args...)
	if err != nil {
		pm.t.Fatalf("podman run: %v\n%s", err, out)
	}
	lines := strings.Fields(out)
	return lines[len(lines)-1]
}

// inspect is one field of `podman inspect`, by Go template.
func (pm *podmanEnv) inspect(container, format string) string {
	pm.t.Helper()
	out, err := pm.podman("inspect", "--format", format, container)
	if err != nil {
		pm.t.Fatalf("podman inspect %s: %v\n%s", container, err, out)
	}
	return strings.TrimSpace(out)
}

// registered is the agent's registration of the container Podman names
// runtimeName.
func (pm *podmanEnv) registered(a interface {
	Workloads() []api.WorkloadRegistration
}, runtimeName string) api.WorkloadRegistration {
	pm.t.Helper()
	id := pm.inspect(runtimeName, "{{.Id}}")
	for _, r := range a.Workloads() {
		if r.ContainerID == id {
			return r
		}
	}
	pm.t.Fatalf("container %s (%s) is not registered: %+v", runtimeName, id, a.Workloads())
	return api.WorkloadRegistration{}
}

// listen accepts (and closes) TCP connections on addr at each port, in
// the network namespace at path, until the test ends.
func listen(t *testing.T, path, addr string, ports ...string) {
	t.Helper()
	for _, port := range ports {
		var ln net.Listener
		if err := netns.DoPath(path, func() (err error) {
			ln, err = net.Listen("tcp", net.JoinHostPort(addr, port))
			return err
		}); err != nil {
			t.Fatalf("listen on %s:%s in %s: %v", addr, port, path, err)
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
	}
}

// dialPath connects from the network namespace at path; a connection
// expected to be dropped is given less time.
func dialPath(path, addr, port string, expect bool) error {
	timeout := 500 * time.Millisecond
	if expect {
		timeout = 3 * time.Second
	}
	return netns.DoPath(path, func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, port), timeout)
		if err == nil {
			c.Close()
		}
		return err
	})
}
