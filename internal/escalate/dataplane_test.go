package escalate

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/load"
)

const escalatePolicy = `
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db-in, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  isolate: [ingress]
  ingress:
    - name: hold
      action: escalate
      from: [{selector: {matchLabels: {app: a}}}]
      services: [{protocol: tcp, port: 5432}, {protocol: udp, port: 5432}]
`

// The real dataplane's escalate verdict reaches the Holder: the queue
// number nft.Options.QueueNum, a packet it reads as its connection, the
// verdict obeyed. The policy is applied through compile as the agent does.
func TestThroughNftDataplane(t *testing.T) {
	h := newKHost(t, "a", "db")
	a, db := h.wls["a"], h.wls["db"]
	db.listen(t, 5432)

	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n")
	var atts []dataplane.Attachment
	for _, w := range []*kWorkload{a, db} {
		fmt.Fprintf(&b, "---\napiVersion: bulkhead.dev/v1\nkind: Workload\nmetadata: {name: %s, namespace: app, labels: {app: %s}}\n"+
			"spec: {host: h1, ips: [%s, %q]}\n", w.name, w.name, w.v4, w.v6.String())
		atts = append(atts, dataplane.Attachment{Workload: "app/" + w.name, Interface: w.hostIf, Addrs: []netip.Addr{w.v4, w.v6}})
	}
	set, errs := load.Bytes("test.yaml", []byte(b.String()+"---\n"+escalatePolicy))
	if len(errs) > 0 {
		t.Fatalf("load: %v", errs)
	}
	c, err := compile.New(set, "h1", nil)
	if err != nil {
		t.Fatal(err)
	}
	const queueNum = 11
	d, err := nft.New(nft.Options{NetNS: h.ns.Path(), QueueNum: queueNum})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nft.Cleanup(h.ns.Path()); d.Close() })
	if err := d.Apply(context.Background(), dataplane.Desired{State: c.State(), Set: set, Attachments: atts}); err != nil {
		t.Fatal(err)
	}

	// No listener: the dataplane fails closed.
	if conn, err := a.dial(db.v4, 5432, 700*time.Millisecond); err == nil {
		conn.Close()
		t.Fatal("escalated connection opened with nothing listening on the queue")
	}

	g := NewFakeOperator()
	hd := h.open(Options{QueueNum: queueNum, Decider: g, Resolver: h.resolverFor()})
	for i, dst := range []netip.Addr{db.v4, db.v6} {
		done := make(chan error, 1)
		go func() {
			conn, err := a.dial(dst, 5432, 5*time.Second)
			if err == nil {
				err = echo(conn, "through nft", 2*time.Second)
				conn.Close()
			}
			done <- err
		}()
		eventually(t, "asked", func() bool { return g.Count() == i+1 })
		g.Answer(Decision{Verdict: Allow})
		if err := <-done; err != nil {
			t.Fatalf("allowed connection to %s through the nft dataplane: %v", dst, err)
		}
		asked := g.Asked()
		r := asked[len(asked)-1]
		want := Conn{Proto: protoTCP, Src: a.v4, Dst: dst, SrcPort: r.Conn.SrcPort, DstPort: 5432}
		if dst.Is6() {
			want.Src = a.v6
		}
		if r.Conn != want || r.Conn.SrcPort == 0 || r.Src.Name != "a" || r.Dst.Name != "db" {
			t.Errorf("request %+v, want connection %+v from a to db", r, want)
		}
	}
	// A denial and UDP.
	go g.Answer(Decision{Verdict: Deny})
	if err := a.udp(db.v4, 5432, 700*time.Millisecond); err == nil {
		t.Error("a denied datagram was answered")
	}
	if c := hd.Counters(); c.Allowed < 2 || c.Denied < 1 || c.FailedClosed[CauseUnparsable] != 0 {
		t.Errorf("counters %+v", c)
	}
}
