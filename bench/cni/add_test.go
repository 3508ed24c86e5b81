// Package benchcni measures the CNI plugin's ADD and DEL as a runtime
// runs them: the real binary, a real agent with the nftables dataplane in
// a throwaway host namespace, and real workload namespaces. README.md
// says how to run it; docs/benchmarks.md has the figures.
package benchcni

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// prefix names every namespace this benchmark creates.
const prefix = "bhcdb"

// TestAddLatency times ADD and DEL of one workload while the agent holds
// 0 and then `held` other registered workloads: ADD asks the agent for
// its registrations before it allocates (so that it never takes an
// address another network's workload holds), which grows with them.
func TestAddLatency(t *testing.T) {
	if os.Getenv("BULKHEAD_BENCH") == "" {
		t.Skip("set BULKHEAD_BENCH=1 to run (README.md)")
	}
	nstest.RequireRoot(t)
	rounds := envInt("BULKHEAD_BENCH_ROUNDS", 30)
	held := envInt("BULKHEAD_BENCH_HELD", 1000)
	dir := t.TempDir()
	bin := filepath.Join(dir, "bulkhead-cni")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/bulkhead-dev/bulkhead/cmd/bulkhead-cni").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	host := nstest.NS(t, prefix)
	t.Cleanup(func() { nft.Cleanup(host.Path()) })
	dp, err := nft.New(nft.Options{NetNS: host.Path()})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	a, err := agent.Start(context.Background(), agent.Options{StateDir: filepath.Join(dir, "state"), Socket: sock, Host: "bench", Dataplane: dp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	conf, _ := json.Marshal(map[string]any{"cniVersion": "1.1.0", "name": "bench", "type": "bulkhead-cni", "agentSocket": sock,
		"subnet": "10.66.0.0/16", "dataDir": filepath.Join(dir, "data"),
		"args": map[string]any{"cni": map[string]any{"labels": []map[string]string{{"key": "app", "value": "web"}}}}})
	w := nstest.NS(t, prefix)
	run := func(bin, cmd string) time.Duration {
		c := exec.Command("ip", "netns", "exec", host.Name, bin)
		c.Env = []string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=bench", "CNI_NETNS=" + w.Path(), "CNI_IFNAME=eth0",
			"CNI_PATH=" + dir, "CNI_ARGS=K8S_POD_NAMESPACE=bench;K8S_POD_NAME=w"}
		c.Stdin = bytes.NewReader(conf)
		t0 := time.Now()
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", bin, cmd, err, out)
		}
		return time.Since(t0)
	}
	// The binaries take turns, round by round, so that the shared
	// machine's noise falls on both alike.
	bins := []string{bin}
	if base := os.Getenv("BULKHEAD_BENCH_BASE"); base != "" {
		bins = append(bins, base)
	}
	type times struct{ add, del []time.Duration }
	measure := func() []times {
		out := make([]times, len(bins))
		for range rounds {
			for i, b := range bins {
				out[i].add = append(out[i].add, run(b, "ADD"))
				out[i].del = append(out[i].del, run(b, "DEL"))
			}
		}
		return out
	}
	at0 := measure()
	// Other workloads, registered as a second network's attachments
	// would be (in the 10.67/16 subnet, on interfaces that need not exist
	// for this measurement).
	for i := range held {
		ip := netip.AddrFrom4([4]byte{10, 67, byte(i >> 8), byte(i)})
		if _, err := a.RegisterWorkload(context.Background(), api.WorkloadRegistration{Namespace: "bench", Name: fmt.Sprintf("held-%d", i),
			Labels: map[string]string{"app": "held"}, IPs: []string{ip.String()}, Interface: fmt.Sprintf("bhh%d", i), ContainerID: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	atN := measure()
	q := func(d []time.Duration, f float64) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[int(float64(len(s))*f)].Round(100 * time.Microsecond)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "\n| binary | other workloads | ADD p50 | ADD p90 | DEL p50 | DEL p90 |\n| --- | --- | --- | --- | --- | --- |\n")
	for i, name := range bins {
		for _, r := range []struct {
			n int
			t times
		}{{0, at0[i]}, {held, atN[i]}} {
			fmt.Fprintf(&b, "| %s | %d | %v | %v | %v | %v |\n", filepath.Base(name), r.n, q(r.t.add, .5), q(r.t.add, .9), q(r.t.del, .5), q(r.t.del, .9))
		}
	}
	fmt.Fprintf(&b, "\nADD p50, %d other workloads / none: %.2f", held, float64(q(atN[0].add, .5))/float64(q(at0[0].add, .5)))
	if len(bins) > 1 {
		fmt.Fprintf(&b, "; this ADD p50 / the base's: %.2f with none, %.2f with %d", float64(q(at0[0].add, .5))/float64(q(at0[1].add, .5)),
			float64(q(atN[0].add, .5))/float64(q(atN[1].add, .5)), held)
	}
	t.Log(b.String())
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
