package cni

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

const realAgentPolicy = `apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: default-deny}
spec:
  tier: baseline
  appliesTo: {selector: {}}
  ingress: [{name: deny-all, action: deny}]
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: shop}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress:
    - name: from-web
      action: allow
      from: [{selector: {matchLabels: {app: web}}}]
      services: [{protocol: tcp, port: pg}]
`

// shop is three workloads attached through the plugin: db-0 (app=db,
// named port pg 5432), web-0 (app=web) and other-0 (app=other).
type shop struct {
	ns    map[string]*netns.NS
	addrs map[string]string
}

func startRealAgent(t *testing.T, e *hostEnv, dp dataplane.Dataplane) *agent.Agent {
	t.Helper()
	ctx := context.Background()
	a, err := agent.Start(ctx, agent.Options{StateDir: filepath.Join(t.TempDir(), "agent"), Socket: e.socket, Dataplane: dp, Host: "bhcn-host"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if _, err := a.Apply(ctx, api.ApplyRequest{Documents: []api.Document{{Name: "policy.yaml", Data: realAgentPolicy}}}); err != nil {
		t.Fatal(err)
	}
	return a
}

func attachShop(t *testing.T, e *hostEnv) shop {
	t.Helper()
	s := shop{ns: map[string]*netns.NS{}, addrs: map[string]string{}}
	add := func(id, app string, ports []map[string]any) {
		conf := e.conf(map[string]any{"args": map[string]any{
			"cni":      map[string]any{"labels": []map[string]string{{"key": "app", "value": app}}},
			"bulkhead": map[string]any{"ports": ports},
		}})
		w := nstest.NS(t, nsPrefix)
		out := e.run(call{Command: "ADD", ContainerID: id, NetNS: w.Path(), IfName: "eth0",
			Args: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=" + id, Stdin: conf}).ok(t)
		s.ns[id], s.addrs[id] = w, resultAddrs(parseResult(t, "1.1.0", out))[0].String()
		e.run(call{Command: "CHECK", ContainerID: id, NetNS: w.Path(), IfName: "eth0", Stdin: withPrev(conf, out)}).ok(t)
	}
	add("db-0", "db", []map[string]any{{"name": "pg", "port": 5432, "protocol": "tcp"}})
	add("web-0", "web", nil)
	add("other-0", "other", nil)
	return s
}

// TestWithTheRealAgent runs the plugin against the real agent (in
// process, with the userspace dataplane): the wire contract, and the
// labels and named ports the plugin passes deciding what is enforced.
func TestWithTheRealAgent(t *testing.T) {
	e := newBareHostEnv(t)
	dp := dataplane.NewUserspace()
	a := startRealAgent(t, e, dp)
	s := attachShop(t, e)
	regs := a.Workloads()
	if len(regs) != 3 {
		t.Fatalf("agent holds %d workloads, want 3: %+v", len(regs), regs)
	}
	for _, r := range regs {
		if r.Interface != attach.HostIfName(r.ContainerID+"/eth0") || !slices.Equal(r.IPs, []string{s.addrs[r.Name]}) {
			t.Errorf("registration %+v: interface or addresses differ from the attachment", r)
		}
	}
	judge := func(iface, from, to string) (policy.Action, string) {
		return dp.Packet(attach.HostIfName(iface+"/eth0"), policy.Packet{
			Src: mustAddr(s.addrs[from]), Dst: mustAddr(s.addrs[to]), Protocol: policy.TCP, SrcPort: 40000, DstPort: 5432})
	}
	if got, _ := judge("web-0", "web-0", "db-0"); got != policy.Allow {
		t.Errorf("web -> db:5432 (the named port pg) = %v, want allow", got)
	}
	if got, _ := judge("other-0", "other-0", "db-0"); got != policy.Deny {
		t.Errorf("other -> db:5432 = %v, want deny", got)
	}
	if got, reason := judge("other-0", "web-0", "db-0"); got != policy.Deny || !strings.Contains(reason, "spoofed") {
		t.Errorf("other sending as web = %v (%s), want denied as spoofed", got, reason)
	}

	e.run(call{Command: "DEL", ContainerID: "web-0", IfName: "eth0", Stdin: e.conf(nil)}).ok(t)
	valid, _ := json.Marshal([]types.GCAttachment{{ContainerID: "db-0", IfName: "eth0"}})
	e.run(call{Command: "GC", Stdin: e.conf(map[string]any{"cni.dev/valid-attachments": json.RawMessage(valid)})}).ok(t)
	if regs := a.Workloads(); len(regs) != 1 || regs[0].Name != "db-0" {
		t.Errorf("after DEL web-0 and GC keeping db-0 the agent holds %+v", regs)
	}
	runPlugin(nil, call{Command: "STATUS", Stdin: e.conf(nil)}).ok(t)
}

// TestWithTheRealAgentInTheKernel is the same with the nftables dataplane
// in the throwaway host namespace and real connections: the policy is in
// force the moment ADD returns.
func TestWithTheRealAgentInTheKernel(t *testing.T) {
	e := newBareHostEnv(t)
	dp, err := nft.New(nft.Options{NetNS: e.host.Path()})
	if err != nil {
		t.Fatal(err)
	}
	startRealAgent(t, e, dp)
	s := attachShop(t, e)
	var ln net.Listener
	if err := s.ns["db-0"].Do(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(s.addrs["db-0"], "5432"))
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
		return s.ns[from].Do(func() error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(s.addrs["db-0"], "5432"), timeout)
			if err == nil {
				c.Close()
			}
			return err
		})
	}
	if err := dial("web-0", 3*time.Second); err != nil {
		t.Errorf("web -> db:5432: %v, want connected", err)
	}
	if err := dial("other-0", 500*time.Millisecond); err == nil {
		t.Error("other -> db:5432 connected; the policy denies it")
	}
	e.run(call{Command: "DEL", ContainerID: "db-0", IfName: "eth0", Stdin: e.conf(nil)}).ok(t)
	if err := dial("web-0", 500*time.Millisecond); err == nil {
		t.Error("web -> db:5432 connected after DEL db-0")
	}
}
