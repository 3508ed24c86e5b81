package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/agent/client"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

func TestSocketIsPrivateAndItsDirectoryCreated(t *testing.T) {
	a := startAgent(t, shortDir(t))
	fi, err := os.Stat(a.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want socket 0600", fi.Mode())
	}
	// A second agent on the same socket is refused while the first runs.
	_, err = Start(ctx, Options{StateDir: filepath.Join(a.dir, "other"), Socket: a.socket, Dataplane: newTestDP()})
	if err == nil || !strings.Contains(err.Error(), "another agent is listening") {
		t.Fatalf("%v", err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	dir := shortDir(t)
	a := startAgent(t, dir)
	a.Close()
	// A crashed agent leaves its socket: simulate with a bound, unserved one.
	os.MkdirAll(filepath.Dir(a.socket), 0o755)
	ln, err := listen(a.socket)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	b := startAgent(t, dir)
	if _, err := b.c.Status(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestNoAgentIsAClearError(t *testing.T) {
	c, _ := client.New("unix:///nonexistent/bhag/agent.sock")
	_, err := c.Status(ctx)
	if !errors.Is(err, client.ErrNoAgent) || !strings.Contains(err.Error(), "no agent at unix:///nonexistent/bhag/agent.sock: is `bulkhead agent --standalone` running?") {
		t.Fatalf("%v", err)
	}
}

func TestOtherUsersAreRefused(t *testing.T) {
	a := startAgent(t, shortDir(t))
	h := a.authorize(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	for _, tc := range []struct {
		peer   peer
		method string
		path   string
		want   int
	}{
		{peer{uid: 1234, known: true}, "GET", "/v1/status", http.StatusForbidden},
		{peer{uid: 1234, known: true}, "POST", "/v1/workloads", http.StatusForbidden},
		{peer{uid: 1234, known: true}, "GET", "/v1/health", http.StatusOK},
		{peer{}, "GET", "/v1/status", http.StatusForbidden},
		{peer{uid: 0, known: true}, "GET", "/v1/status", http.StatusOK},
		{peer{uid: os.Getuid(), known: true}, "GET", "/v1/status", http.StatusOK},
	} {
		r := httptest.NewRequest(tc.method, tc.path, nil)
		r = r.WithContext(context.WithValue(r.Context(), peerKey{}, tc.peer))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("%+v %s %s: %d, want %d", tc.peer, tc.method, tc.path, w.Code, tc.want)
		}
	}
}

// TestPeerCredentialsRefuseNobody runs a child process as nobody against a
// socket opened to everyone (0666, so that only SO_PEERCRED stands in the
// way): health answers, everything else is refused.
func TestPeerCredentialsRefuseNobody(t *testing.T) {
	if os.Getenv("BHAG_CHILD_SOCKET") != "" {
		return // the child's run of this test: see TestMain
	}
	nstest.RequireRoot(t)
	a := startAgent(t, shortDir(t))
	os.Chmod(a.dir, 0o755)
	os.Chmod(filepath.Dir(a.socket), 0o755)
	os.Chmod(a.socket, 0o666)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(a.dir, "child.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "BHAG_CHILD_SOCKET="+a.socket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); !strings.HasPrefix(got, "health 200\nstatus 403 ") || !strings.Contains(got, "uid 65534 may not use this agent") {
		t.Fatalf("child saw:\n%s", got)
	}
}

func TestMain(m *testing.M) {
	if sock := os.Getenv("BHAG_CHILD_SOCKET"); sock != "" {
		os.Exit(childCalls(sock))
	}
	os.Exit(m.Run())
}

// childCalls is the nobody side of TestPeerCredentialsRefuseNobody.
func childCalls(sock string) int {
	c, err := client.New(sock)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	if _, err := c.Health(ctx); err != nil {
		fmt.Println("health", err)
	} else {
		fmt.Println("health 200")
	}
	_, err = c.Status(ctx)
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println("status", e.Status, e.Error())
	} else {
		fmt.Println("status", err)
	}
	return 0
}
