package e2e

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// The README's "Standalone agent and the CNI plugin" walkthrough, with the
// real binaries called as a user (and a container runtime) calls them: an
// agent started in a host namespace, two workload namespaces attached by
// bulkhead-cni, the examples/shop policy applied, and real connections.
func TestReadmeStandaloneWalkthrough(t *testing.T) {
	nstest.RequireRoot(t)
	bin := buildBinaries(t)
	host := nstest.NS(t, "bhrd-h")
	web, db := nstest.NS(t, "bhrd-w"), nstest.NS(t, "bhrd-d")
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "agent.sock")

	ctx, cancel := context.WithCancel(context.Background())
	agent := exec.CommandContext(ctx, "ip", "netns", "exec", host.Name, filepath.Join(bin, "bulkhead"),
		"agent", "--standalone", "--socket", sock, "--state-dir", filepath.Join(dir, "state"))
	agentLog, _ := os.Create(filepath.Join(dir, "agent.log"))
	agent.Stdout, agent.Stderr = agentLog, agentLog
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		agent.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(agentLog.Name())
			t.Logf("agent log:\n%s", b)
		}
		exec.Command(filepath.Join(bin, "bulkhead"), "agent", "cleanup", "--netns", host.Path()).Run()
	})
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, "bulkhead"), args...)
		cmd.Env = append(os.Environ(), "BULKHEAD_AGENT=unix://"+sock)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bulkhead %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	waitFor(t, 10*time.Second, func() bool {
		cmd := exec.Command(filepath.Join(bin, "bulkhead"), "--agent", "unix://"+sock, "agent", "status")
		return cmd.Run() == nil
	})

	out := cli("apply", "-f", "../../examples/shop/policy.yaml")
	if !strings.Contains(out, "Policy default-deny created") || !strings.Contains(out, "enforced in") {
		t.Fatalf("apply printed:\n%s", out)
	}
	for _, w := range []struct {
		ns   *netns.NS
		name string
	}{{web, "web"}, {db, "db"}} {
		conf, err := os.ReadFile("../../examples/shop/" + w.name + ".json")
		if err != nil {
			t.Fatal(err)
		}
		conf = []byte(strings.Replace(string(conf), `"/run/bulkhead/agent.sock"`,
			`"`+sock+`", "dataDir": "`+filepath.Join(dir, "cni")+`"`, 1))
		cmd := exec.Command("ip", "netns", "exec", host.Name, filepath.Join(bin, "bulkhead-cni"))
		cmd.Env = append(os.Environ(), "CNI_COMMAND=ADD", "CNI_CONTAINERID="+w.name, "CNI_NETNS="+w.ns.Path(),
			"CNI_IFNAME=eth0", "CNI_PATH="+bin, "CNI_ARGS=K8S_POD_NAMESPACE=shop;K8S_POD_NAME="+w.name)
		cmd.Stdin = strings.NewReader(string(conf))
		if out, err := cmd.Output(); err != nil {
			t.Fatalf("bulkhead-cni ADD %s: %v\n%s", w.name, err, out)
		}
	}
	if out := cli("get", "workloads"); !strings.Contains(out, "10.88.0.1") || !strings.Contains(out, "10.88.0.2") {
		t.Fatalf("get workloads:\n%s", out)
	}

	listen := func(port string) {
		var ln net.Listener
		if err := db.Do(func() (err error) { ln, err = net.Listen("tcp4", "10.88.0.2:"+port); return err }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for range 20 {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	listen("5432")
	listen("8080")
	dial := func(from *netns.NS, addr string) error {
		return from.Do(func() error {
			c, err := net.DialTimeout("tcp4", addr, 700*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
	}
	if err := dial(web, "10.88.0.2:5432"); err != nil {
		t.Errorf("web -> db:5432 must connect: %v", err)
	}
	if err := dial(web, "10.88.0.2:8080"); err == nil {
		t.Errorf("web -> db:8080 connected; the policy denies it")
	}
	if err := dial(db, "10.88.0.1:5432"); err == nil {
		t.Errorf("db -> web:5432 connected; the policy denies it")
	}
	counted := regexp.MustCompile(`rule NetworkPolicy/shop/db-from-web/ingress/0\s+[1-9]`)
	if out := cli("agent", "counters"); !counted.MatchString(out) {
		t.Errorf("agent counters do not count the allowing rule:\n%s", out)
	}
	if out := cli("explain", "shop/web", "shop/db", "--port", "8080/tcp"); !strings.Contains(out, "DENY") {
		t.Errorf("explain:\n%s", out)
	}
	if out := cli("agent", "dump", "--netns", host.Path()); !strings.Contains(out, "table inet bulkhead") {
		t.Errorf("dump:\n%s", out)
	}
	for _, w := range []string{"web", "db"} {
		cmd := exec.Command("ip", "netns", "exec", host.Name, filepath.Join(bin, "bulkhead-cni"))
		conf, _ := os.ReadFile("../../examples/shop/" + w + ".json")
		cmd.Stdin = strings.NewReader(strings.Replace(string(conf), `"/run/bulkhead/agent.sock"`,
			`"`+sock+`", "dataDir": "`+filepath.Join(dir, "cni")+`"`, 1))
		cmd.Env = append(os.Environ(), "CNI_COMMAND=DEL", "CNI_CONTAINERID="+w, "CNI_IFNAME=eth0", "CNI_PATH="+bin)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("bulkhead-cni DEL %s: %v\n%s", w, err, out)
		}
	}
	if out := cli("get", "workloads"); strings.Contains(out, "10.88.0.1") {
		t.Errorf("after DEL, get workloads still lists web:\n%s", out)
	}
}

// buildBinaries builds bulkhead and bulkhead-cni once per test binary.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(os.TempDir(), "bulkhead-e2e-bin")
	for _, c := range []string{"bulkhead", "bulkhead-cni"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, c), "../../cmd/"+c).CombinedOutput()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", c, err, out)
		}
	}
	return dir
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("still not ready after %v", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
