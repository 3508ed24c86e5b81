package flows_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/flows"
	"github.com/bulkhead-dev/bulkhead/internal/flows/flowstest"
	"github.com/bulkhead-dev/bulkhead/internal/load"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

const realPolicy = `
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: b-in, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: b}}}
  isolate: [ingress]
  ingress:
    - {name: web, action: allow, from: [{selector: {matchLabels: {app: a}}}], services: [{protocol: tcp, port: 8080}], log: true}
    - {name: drop, action: deny, services: [{protocol: tcp, port: 9090}, {protocol: udp, port: 9091}], log: true}
`

// With the real dataplane (nft.New, in a host namespace of this test's
// own): an allowed connection's record carries the rule its log record
// named, a denied one's the denying rule, and a burst of denials is
// reported whole, as records and as suppressed by the dataplane's rate
// limit, from the dataplane's own rule counters.
func TestRealDataplane(t *testing.T) {
	nstest.RequireRoot(t)
	h := nstest.NS(t, "bhfl")
	wa, wb := nstest.NS(t, "bhfl"), nstest.NS(t, "bhfl")
	va, vb := netip.MustParseAddr("10.233.0.1"), netip.MustParseAddr("10.233.0.2")
	var atts []dataplane.Attachment
	yaml := "apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n"
	for _, w := range []struct {
		name string
		ns   *netns.NS
		addr netip.Addr
	}{{"a", wa, va}, {"b", wb, vb}} {
		hostIf := attach.HostIfName(w.ns.Name)
		spec := attach.Spec{HostIf: hostIf, NetNS: w.ns.Path(), IfName: "eth0", Addrs: []netip.Addr{w.addr}}
		if err := h.Do(func() error { _, err := attach.Add(spec); return err }); err != nil {
			t.Fatalf("attach %s: %v", w.name, err)
		}
		atts = append(atts, dataplane.Attachment{Workload: "app/" + w.name, Interface: hostIf, Addrs: []netip.Addr{w.addr}})
		yaml += fmt.Sprintf("---\napiVersion: bulkhead.dev/v1\nkind: Workload\nmetadata: {name: %s, namespace: app, labels: {app: %s}}\n"+
			"spec: {host: h1, ips: [%s]}\n", w.name, w.name, w.addr)
	}
	set, errs := load.Bytes("test.yaml", []byte(yaml+"---\n"+realPolicy))
	if len(errs) > 0 {
		t.Fatalf("load: %v", errs)
	}
	comp, err := compile.New(set, "h1", nil)
	if err != nil {
		t.Fatal(err)
	}
	const group, rate = 5, 20
	d, err := nft.New(nft.Options{NetNS: h.Path(), LogGroup: group, LogRate: rate})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Apply(context.Background(), dataplane.Desired{State: comp.State(), Set: set, Attachments: atts}); err != nil {
		t.Fatal(err)
	}
	if err := h.Do(func() error {
		return netns.Sysctl("net/netfilter/nf_conntrack_tcp_timeout_time_wait", "1")
	}); err != nil {
		t.Fatal(err)
	}
	hs := &host{h: h, a: wa, b: wb}
	sink := &flowstest.Sink{}
	c, err := flows.New(flows.Config{NetNS: h.Path(), LogGroup: group, StateDir: t.TempDir(), Sink: sink,
		Counters: d, FlushInterval: 200 * time.Millisecond, CounterInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var ln net.Listener
	if err := wb.Do(func() (err error) { ln, err = net.Listen("tcp", ":8080"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			io.Copy(io.Discard, conn)
			conn.Close()
		}
	}()
	var conn net.Conn
	if err := wa.Do(func() (err error) { conn, err = net.DialTimeout("tcp", "10.233.0.2:8080", 3*time.Second); return err }); err != nil {
		t.Fatalf("allowed connection: %v", err)
	}
	conn.Write([]byte("hello"))
	conn.Close()
	if err := wa.Do(func() error {
		_, err := net.DialTimeout("tcp", "10.233.0.2:9090", 300*time.Millisecond)
		if err == nil {
			return fmt.Errorf("a denied connection was made")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var udp net.Conn
	if err := wa.Do(func() (err error) { udp, err = net.Dial("udp", "10.233.0.2:9091"); return err }); err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	for range 300 {
		udp.Write([]byte("x"))
		time.Sleep(100 * time.Microsecond)
	}
	cs, err := d.Counters(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const web, drop = "Policy/app/b-in/ingress/web", "Policy/app/b-in/ingress/drop"
	counted := cs.Rules[drop].Packets // the TCP SYN and the UDP packets

	find := func(recs []flows.Record, port uint16, src flows.Source) []flows.Record {
		var out []flows.Record
		for _, r := range recs {
			if r.Src.Addr == va && r.Dst.Addr == vb && r.Dst.Port == port && r.Source == src {
				out = append(out, r)
			}
		}
		return out
	}
	waitFor(t, 30*time.Second, "records of the three kinds of traffic", func() bool {
		hs.sweep(t)
		got := sink.Received()
		var logged uint64
		for _, r := range append(find(got.Records, 9090, flows.FromNFLOG), find(got.Records, 9091, flows.FromNFLOG)...) {
			logged += r.Orig.Packets
		}
		return len(find(got.Records, 8080, flows.FromConntrack)) == 1 && logged+got.Suppressed["deny "+drop] >= counted
	})
	got := sink.Received()
	allowed := find(got.Records, 8080, flows.FromConntrack)[0]
	if allowed.Verdict != flows.Allow || allowed.Rule != web || len(allowed.Hits) != 1 || allowed.Orig.Packets == 0 || allowed.Reply.Packets == 0 {
		t.Errorf("allowed connection: %+v", allowed)
	}
	if n := len(find(got.Records, 8080, flows.FromNFLOG)); n != 0 {
		t.Errorf("the allowed connection's log record also made %d records of its own", n)
	}
	denied := find(got.Records, 9090, flows.FromNFLOG)
	if len(denied) != 1 || denied[0].Verdict != flows.Deny || denied[0].Rule != drop {
		t.Errorf("denied connection: %+v", denied)
	}
	var logged uint64
	for _, r := range append(denied, find(got.Records, 9091, flows.FromNFLOG)...) {
		logged += r.Orig.Packets
	}
	s := got.Suppressed["deny "+drop]
	t.Logf("rule %s: the kernel counted %d, logged %d, suppressed %d", drop, counted, logged, s)
	if logged+s != counted || s == 0 {
		t.Errorf("rule %s: the kernel counted %d; logged %d + suppressed %d", drop, counted, logged, s)
	}
}
