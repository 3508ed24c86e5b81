package cni

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
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

// TestWithTheRealAgent runs the plugin against the real agent (in
// process, with the userspace dataplane): the wire contract, and the
// labels and named ports the plugin passes deciding what is enforced.
func TestWithTheRealAgent(t *testing.T) {
	e := newBareHostEnv(t)
	dp := dataplane.NewUserspace()
	ctx := context.Background()
	a, err := agent.Start(ctx, agent.Options{StateDir: filepath.Join(t.TempDir(), "agent"), Socket: e.socket, Dataplane: dp, Host: "bhcn-host"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if _, err := a.Apply(ctx, api.ApplyRequest{Documents: []api.Document{{Name: "policy.yaml", Data: realAgentPolicy}}}); err != nil {
		t.Fatal(err)
	}
	addrOf := map[string]string{}
	add := func(id, app string, ports []map[string]any) {
		conf := e.conf(map[string]any{"args": map[string]any{
			"cni":      map[string]any{"labels": []map[string]string{{"key": "app", "value": app}}},
			"bulkhead": map[string]any{"ports": ports},
		}})
		w := nstest.NS(t, nsPrefix)
		out := e.run(call{Command: "ADD", ContainerID: id, NetNS: w.Path(), IfName: "eth0",
			Args: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=" + id, Stdin: conf}).ok(t)
		addrOf[id] = resultAddrs(parseResult(t, "1.1.0", out))[0].String()
		e.run(call{Command: "CHECK", ContainerID: id, NetNS: w.Path(), IfName: "eth0", Stdin: withPrev(conf, out)}).ok(t)
	}
	add("db-0", "db", []map[string]any{{"name": "pg", "port": 5432, "protocol": "tcp"}})
	add("web-0", "web", nil)
	add("other-0", "other", nil)

	regs := a.Workloads()
	if len(regs) != 3 {
		t.Fatalf("agent holds %d workloads, want 3: %+v", len(regs), regs)
	}
	for _, r := range regs {
		if r.Interface != attach.HostIfName(r.ContainerID+"/eth0") || !slices.Equal(r.IPs, []string{addrOf[r.Name]}) {
			t.Errorf("registration %+v: interface or addresses differ from the attachment", r)
		}
	}
	judge := func(from, to string, port int) policy.Action {
		act, _ := dp.Packet(attach.HostIfName(from+"/eth0"), policy.Packet{
			Src: mustAddr(addrOf[from]), Dst: mustAddr(addrOf[to]), Protocol: policy.TCP, SrcPort: 40000, DstPort: port})
		return act
	}
	if got := judge("web-0", "db-0", 5432); got != policy.Allow {
		t.Errorf("web -> db:5432 (the named port pg) = %v, want allow", got)
	}
	if got := judge("other-0", "db-0", 5432); got != policy.Deny {
		t.Errorf("other -> db:5432 = %v, want deny", got)
	}
	spoof, reason := dp.Packet(attach.HostIfName("other-0/eth0"), policy.Packet{
		Src: mustAddr(addrOf["web-0"]), Dst: mustAddr(addrOf["db-0"]), Protocol: policy.TCP, SrcPort: 40001, DstPort: 5432})
	if spoof != policy.Deny || !strings.Contains(reason, "spoofed") {
		t.Errorf("other sending as web = %v (%s), want denied as spoofed", spoof, reason)
	}

	e.run(call{Command: "DEL", ContainerID: "web-0", IfName: "eth0", Stdin: e.conf(nil)}).ok(t)
	valid, _ := json.Marshal([]types.GCAttachment{{ContainerID: "db-0", IfName: "eth0"}})
	e.run(call{Command: "GC", Stdin: e.conf(map[string]any{"cni.dev/valid-attachments": json.RawMessage(valid)})}).ok(t)
	if regs := a.Workloads(); len(regs) != 1 || regs[0].Name != "db-0" {
		t.Errorf("after DEL web-0 and GC keeping db-0 the agent holds %+v", regs)
	}
	runPlugin(nil, call{Command: "STATUS", Stdin: e.conf(nil)}).ok(t)
}
