// Package etcdtest starts etcd for tests: a separately started etcd
// server (the etcd binary of Debian's etcd-server package, as operators
// run it), one member or a cluster of several, and etcd's embed package in
// the test's own process. Everything listens on loopback only, on ports
// the kernel chose, with its data in the test's temporary directory, and
// is stopped when the test ends.
//
// A missing etcd binary is a missing prerequisite (nstest.Missing): a skip
// outside CI, a failure in it; scripts/deps.sh installs it.
package etcdtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// Binary is the etcd server the tests start.
const Binary = "etcd"

// startTimeout bounds how long a cluster may take to elect a leader.
const startTimeout = 30 * time.Second

// Options configure StartCluster.
type Options struct {
	// Members is the number of members (default 1).
	Members int
	// TLS, when set, makes the members serve their clients over TLS
	// with these files; peers still talk plain HTTP on loopback.
	TLS *TLSFiles
	// ClientCertAuth makes the members require a client certificate
	// signed by TLS.CA.
	ClientCertAuth bool
}

// Cluster is a running etcd cluster of separate processes.
type Cluster struct {
	t       testing.TB
	opts    Options
	members []*member
}

type member struct {
	name, dir    string
	client, peer string // URLs
	cmd          *exec.Cmd
	exited       chan struct{}
	out          *syncBuffer
}

// StartCluster starts an etcd cluster and waits until it has a leader.
// It stops (kills) every member when t ends.
func StartCluster(t testing.TB, opts Options) *Cluster {
	t.Helper()
	nstest.RequireCommand(t, Binary)
	if opts.Members <= 0 {
		opts.Members = 1
	}
	var lastErr error
	for attempt := range 3 {
		c, err := tryStart(t, opts)
		if err == nil {
			return c
		}
		lastErr = err
		// Another process may take a port between its choosing and
		// etcd's listening: try again with others.
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
		t.Logf("etcdtest: attempt %d: %v", attempt+1, err)
	}
	t.Fatalf("etcdtest: start %d members: %v", opts.Members, lastErr)
	return nil
}

func tryStart(t testing.TB, opts Options) (*Cluster, error) {
	dir := t.TempDir()
	ports, err := FreePorts(2 * opts.Members)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if opts.TLS != nil {
		scheme = "https"
	}
	c := &Cluster{t: t, opts: opts}
	var initial []string
	for i := range opts.Members {
		m := &member{name: fmt.Sprintf("m%d", i), dir: filepath.Join(dir, fmt.Sprintf("m%d", i)),
			client: fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[2*i]),
			peer:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1])}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peer)
	}
	t.Cleanup(c.stopAll)
	for _, m := range c.members {
		if err := c.run(m, strings.Join(initial, ","), "new"); err != nil {
			return nil, err
		}
	}
	if err := c.WaitHealthy(startTimeout); err != nil {
		return nil, err
	}
	return c, nil
}

// run starts m's process; state is etcd's --initial-cluster-state.
func (c *Cluster) run(m *member, initial, state string) error {
	args := []string{"--name", m.name, "--data-dir", m.dir,
		"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
		"--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
		"--initial-cluster", initial, "--initial-cluster-state", state,
		"--initial-cluster-token", "bhtt-" + filepath.Base(filepath.Dir(m.dir)),
		"--logger", "zap", "--log-level", "warn", "--log-outputs", "stderr"}
	if f := c.opts.TLS; f != nil {
		args = append(args, "--cert-file", f.ServerCert, "--key-file", f.ServerKey, "--trusted-ca-file", f.CA)
		if c.opts.ClientCertAuth {
			args = append(args, "--client-cert-auth")
		}
	}
	m.out = &syncBuffer{}
	m.cmd = exec.Command(Binary, args...)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	// Its own process group, so that a member dies with nothing left
	// behind when the test kills it.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		return fmt.Errorf("etcdtest: start %s: %w", m.name, err)
	}
	m.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(m.cmd, m.exited)
	return nil
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.client
	}
	return out
}

// Kill kills member i (SIGKILL: no goodbye to its peers) and waits for
// it to exit.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	m := c.members[i]
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		c.t.Fatalf("etcdtest: %s did not exit within 10 s of SIGKILL", m.name)
	}
	m.cmd = nil
}

// Restart starts member i again, with its data, after Kill.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	var initial []string
	for _, m := range c.members {
		initial = append(initial, m.name+"="+m.peer)
	}
	if err := c.run(c.members[i], strings.Join(initial, ","), "existing"); err != nil {
		c.t.Fatal(err)
	}
}

// WaitHealthy waits until every running member says it is healthy (it
// has a leader), at most d.
func (c *Cluster) WaitHealthy(d time.Duration) error {
	deadline := time.Now().Add(d)
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: c.tlsConfig()}}
	defer hc.CloseIdleConnections()
	for _, m := range c.members {
		if m.cmd == nil {
			continue
		}
		for {
			select {
			case <-m.exited:
				return fmt.Errorf("etcdtest: %s exited: %s", m.name, m.out.String())
			default:
			}
			resp, err := hc.Get(m.client + "/health")
			if err == nil {
				ok := resp.StatusCode == http.StatusOK
				resp.Body.Close()
				if ok {
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("etcdtest: %s not healthy after %s (last: %v): %s", m.name, d, err, m.out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

func (c *Cluster) tlsConfig() *tls.Config {
	f := c.opts.TLS
	if f == nil {
		return nil
	}
	cfg, err := f.ClientConfig(true)
	if err != nil {
		c.t.Fatalf("etcdtest: %v", err)
	}
	return cfg
}

// Leader returns the index of the member that leads, waiting for one at
// most d.
func (c *Cluster) Leader(d time.Duration) (int, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: d, TLS: c.tlsConfig(), Logger: zap.NewNop()})
	if err != nil {
		return 0, fmt.Errorf("etcdtest: client: %w", err)
	}
	defer cli.Close()
	var lastErr error
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for i, m := range c.members {
			if m.cmd == nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := cli.Status(ctx, m.client)
			cancel()
			if err != nil {
				lastErr = err
				continue
			}
			if st.Leader != 0 && st.Leader == st.Header.MemberId {
				return i, nil
			}
		}
	}
	return 0, fmt.Errorf("etcdtest: no leader after %s: %v", d, lastErr)
}

// Log returns what member i has printed.
func (c *Cluster) Log(i int) string { return c.members[i].out.String() }

func (c *Cluster) stopAll() {
	for _, m := range c.members {
		if m.cmd != nil {
			_ = m.cmd.Process.Kill()
			select {
			case <-m.exited:
			case <-time.After(10 * time.Second):
			}
			m.cmd = nil
		}
	}
}

// FreePorts returns n loopback TCP ports that were free a moment ago.
func FreePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("etcdtest: free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Refused returns a loopback client URL on which nothing listens.
func Refused(t testing.TB) string {
	t.Helper()
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", ports[0])
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
