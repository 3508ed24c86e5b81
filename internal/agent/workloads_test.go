package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// rawPost sends body as is to the agent's socket and returns the status
// and the answer.
func rawPost(t *testing.T, socket, path string, body []byte) (int, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
	res, err := hc.Post("http://agent"+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(out)
}

func regJSON(t *testing.T, r api.WorkloadRegistration) []byte {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Issue 9: the agent socket ignored data after the JSON value. Every
// body must be exactly one value, read as the manager reads its bodies
// (no duplicate or case-folded keys); a registration is bounded in size.
func TestSocketTakesExactlyOneBoundedValue(t *testing.T) {
	a := startAgent(t, shortDir(t))
	w := regJSON(t, inventory[0])
	for _, c := range []struct {
		path   string
		body   string
		status int
		want   string
	}{
		{"/v1/workloads", string(w) + `{"namespace": "x"}`, 400, "data after the JSON value"},
		{"/v1/workloads", string(w) + ` garbage`, 400, "data after the JSON value"},
		{"/v1/apply", `{"documents": [{"name": "a.yaml", "data": "x"}]} []`, 400, "data after the JSON value"},
		{"/v1/workloads", `{"namespace": "trading", "name": "big", "interface": "bhbig", "ips": ["10.10.9.9"], "containerID": "` +
			strings.Repeat("x", 70000) + `"}`, 413, "larger than 65536 bytes"},
		{"/v1/workloads", `{"namespace": "trading", "namespace": "shop", "name": "x", "interface": "bhx", "ips": ["10.10.9.9"]}`, 400, "given twice"},
		{"/v1/workloads", `{"Namespace": "trading", "name": "x", "interface": "bhx", "ips": ["10.10.9.9"]}`, 400, "case matters"},
		{"/v1/workloads", string(w) + "\n \t\n", 200, ""},
	} {
		status, body := rawPost(t, a.socket, c.path, []byte(c.body))
		if status != c.status || !strings.Contains(body, c.want) {
			t.Errorf("POST %s %.60q... = %d %s, want %d with %q", c.path, c.body, status, body, c.status, c.want)
		}
	}
	if n := len(a.Workloads()); n != 1 {
		t.Errorf("the agent holds %d workloads, want the one whole registration", n)
	}
}

// Issue 9: labels and the size of one registration are bounded with
// clear errors at the agent's socket, by the policy's one label rule.
func TestRegistrationIsBounded(t *testing.T) {
	a := startAgent(t, shortDir(t))
	base := api.WorkloadRegistration{Namespace: "shop", Name: "web", IPs: []string{"10.10.9.1"}, Interface: "bhweb"}
	many := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[fmt.Sprintf("k%d", i)] = "v"
		}
		return m
	}
	for _, c := range []struct {
		edit func(*api.WorkloadRegistration)
		want string
	}{
		{func(r *api.WorkloadRegistration) { r.Labels = many(65) }, "too many labels: 65; at most 64"},
		{func(r *api.WorkloadRegistration) { r.Labels = map[string]string{"a/b/c": "v"} }, `label key "a/b/c"`},
		{func(r *api.WorkloadRegistration) { r.Labels = map[string]string{"app": strings.Repeat("v", 64)} }, "invalid label value"},
		{func(r *api.WorkloadRegistration) { r.IPs = make([]string, 17) }, "17 addresses; a workload has at most 16"},
		{func(r *api.WorkloadRegistration) { r.Ports = make([]api.NamedPort, 65) }, "65 named ports"},
	} {
		r := base
		c.edit(&r)
		_, err := a.c.RegisterWorkload(ctx, r)
		if e := apiError(t, err); e.Status != http.StatusUnprocessableEntity || !strings.Contains(e.Error(), c.want) {
			t.Errorf("register = %d %v, want 422 with %q", e.Status, e, c.want)
		}
	}
	r := base
	r.Labels = many(64)
	if _, err := a.c.RegisterWorkload(ctx, r); err != nil {
		t.Errorf("64 labels: %v", err)
	}
}

// Issue 9: a second attachment under a name another attachment holds
// used to replace its registration. It is refused; an unregistration on
// the refused attachment's interface leaves the first alone; concurrent
// registrations of one name from two interfaces leave exactly one.
func TestOneNameOneAttachment(t *testing.T) {
	a := startAgent(t, shortDir(t))
	first := api.WorkloadRegistration{Namespace: "shop", Name: "web", IPs: []string{"10.10.9.1"}, Interface: "bhweb1", ContainerID: "c1"}
	second := first
	second.IPs, second.Interface, second.ContainerID = []string{"10.10.9.2"}, "bhweb2", "c2"
	if _, err := a.c.RegisterWorkload(ctx, first); err != nil {
		t.Fatal(err)
	}
	_, err := a.c.RegisterWorkload(ctx, second)
	if e := apiError(t, err); e.Status != http.StatusConflict || !strings.Contains(e.Error(), "registered already on interface bhweb1") {
		t.Errorf("second attachment as shop/web = %d %v, want 409 naming bhweb1", e.Status, e)
	}
	if err := a.c.UnregisterWorkloadOn(ctx, "shop", "web", "bhweb2"); err != nil {
		t.Fatal(err)
	}
	if regs := a.Workloads(); len(regs) != 1 || regs[0].Interface != "bhweb1" {
		t.Errorf("after unregistering on bhweb2 the agent holds %+v, want shop/web on bhweb1", regs)
	}
	if err := a.c.UnregisterWorkloadOn(ctx, "shop", "web", "bhweb1"); err != nil || len(a.Workloads()) != 0 {
		t.Fatalf("unregister on bhweb1: %v, %d left", err, len(a.Workloads()))
	}

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, r := range []api.WorkloadRegistration{first, second} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = a.c.RegisterWorkload(ctx, r)
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) || len(a.Workloads()) != 1 {
		t.Errorf("concurrent registrations of shop/web from two interfaces: %v, %v; the agent holds %+v, want exactly one", errs[0], errs[1], a.Workloads())
	}
}

// Issue 10: the agent logs each workload registered and unregistered at
// info level (and nothing for a change that changes nothing).
func TestRegistrationsAreLogged(t *testing.T) {
	var buf syncBuffer
	dir := shortDir(t)
	a, err := Start(ctx, Options{StateDir: filepath.Join(dir, "state"), Host: "h1", Dataplane: newTestDP(),
		Logger: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	w := inventory[2]
	for range 2 {
		if _, err := a.RegisterWorkload(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := a.UnregisterWorkload(ctx, w.Namespace, w.Name); err != nil {
			t.Fatal(err)
		}
	}
	log := buf.String()
	for _, want := range []string{"level=INFO msg=\"workload registered\" component=agent workload=trading/buy-db ips=[10.10.2.10] interface=bhbuydb",
		"level=INFO msg=\"workload unregistered\" component=agent workload=trading/buy-db"} {
		if strings.Count(log, want) != 1 {
			t.Errorf("log has %d lines with %q, want 1:\n%s", strings.Count(log, want), want, log)
		}
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Issue 10, security defect 1, at the agent: a registration from a
// process in another network namespace than the one the agent enforces
// in is refused (the agent learns the caller's namespace from its socket
// peer), whatever the caller checked itself; from the right namespace it
// is taken. The agent's status names its namespace.
func TestRegistrationFromAnotherNamespaceRefused(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireCommand(t, "curl")
	enforced, elsewhere := nstest.NS(t, "bhcd"), nstest.NS(t, "bhcd")
	t.Cleanup(func() { nft.Cleanup(enforced.Path()) })
	dp, err := nft.New(nft.Options{NetNS: enforced.Path()})
	if err != nil {
		t.Fatal(err)
	}
	dir := shortDir(t)
	sock := filepath.Join(dir, "agent.sock")
	a, err := Start(ctx, Options{StateDir: filepath.Join(dir, "state"), Socket: sock, Host: "h1", Dataplane: dp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	id, err := netns.IDOf(enforced.Path())
	if err != nil {
		t.Fatal(err)
	}
	if st := a.Status(); st.NetNS == nil || st.NetNS.Ino != id.Ino || st.NetNS.Dev != id.Dev {
		t.Errorf("status netns = %+v, want %+v", st.NetNS, id)
	}
	post := func(in *netns.NS, r api.WorkloadRegistration) string {
		out, _ := exec.Command("ip", "netns", "exec", in.Name, "curl", "-sS", "--unix-socket", sock, "-X", "POST",
			"-H", "Content-Type: application/json", "-w", "\n%{http_code}", "--data-binary", string(regJSON(t, r)), "http://agent/v1/workloads").CombinedOutput()
		return string(out)
	}
	r := api.WorkloadRegistration{Namespace: "shop", Name: "web", IPs: []string{"10.10.9.1"}, Interface: "bhweb1"}
	if out := post(elsewhere, r); !strings.HasSuffix(out, "409") || !strings.Contains(out, "enforces in network namespace "+id.String()) {
		t.Errorf("registration from another namespace answered %s, want 409 naming %v", out, id)
	}
	if n := len(a.Workloads()); n != 0 {
		t.Fatalf("the agent holds %d workloads after the refused registration", n)
	}
	if out := post(enforced, r); !strings.HasSuffix(out, "200") {
		t.Errorf("registration from the namespace the agent enforces in answered %s, want 200", out)
	}
}
