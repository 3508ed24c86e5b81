package k8s

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
	"go.yaml.in/yaml/v3"
)

// decodeAll reads a multi-document YAML stream the way the loader does:
// every document by its apiVersion and kind.
func decodeAll(file, src string) (*policy.Set, source.Errors) {
	dec := yaml.NewDecoder(strings.NewReader(src))
	set := &policy.Set{}
	var errs source.Errors
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs.Add(source.Pos{File: file}, "", "yaml: %v", err)
			break
		}
		root := doc.Content[0]
		apiVersion, kind := typeOf(root)
		if !Handles(apiVersion, kind) {
			errs.Add(source.Pos{File: file, Line: root.Line}, "kind", "not handled: %s %s", apiVersion, kind)
			continue
		}
		s, e := Decode(file, root, apiVersion, kind)
		errs = append(errs, e...)
		if s != nil {
			set.Merge(s)
		}
	}
	return set, errs
}

func mustDecode(t *testing.T, src string) *policy.Set {
	t.Helper()
	set, errs := decodeAll("test.yaml", src)
	if len(errs) > 0 {
		t.Fatalf("decode: %v", errs.Err())
	}
	return set
}

// cluster is a model of pods in namespaces, as the upstream suites build it.
type cluster struct {
	set  *policy.Set
	pods []string // "ns/name"
}

// e2eCluster is the model of the kubernetes e2e network policy tests
// (test/e2e/network/netpol): namespaces x, y, z, each with pods a, b, c
// labelled pod=<name>, each serving ports 80 and 81 on TCP, UDP and SCTP
// under the names serve-<port>-<protocol>.
func e2eCluster() *cluster {
	c := &cluster{set: &policy.Set{}}
	for i, ns := range []string{"x", "y", "z"} {
		c.set.Namespaces = append(c.set.Namespaces, &policy.Namespace{Name: ns, Labels: map[string]string{"ns": ns, policy.MetadataNameLabel: ns}})
		for j, pod := range []string{"a", "b", "c"} {
			w := &policy.Workload{Namespace: ns, Name: pod, Labels: map[string]string{"pod": pod},
				IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, byte(i + 1), byte(j + 1)})}}
			for _, port := range []int{80, 81} {
				for _, p := range []policy.Protocol{policy.TCP, policy.UDP, policy.SCTP} {
					w.Ports = append(w.Ports, policy.NamedPort{Name: fmt.Sprintf("serve-%d-%s", port, p), Port: port, Protocol: p})
				}
			}
			c.set.Workloads = append(c.set.Workloads, w)
			c.pods = append(c.pods, ns+"/"+pod)
		}
	}
	return c
}

// houses is the model of the network-policy-api conformance suite: four
// namespaces labelled conformance-house=<house>, two pods each labelled the
// same, serving TCP 80 ("web") and 8080, UDP 53 ("dns") and 5353, SCTP 9003
// ("sctp") and 9005.
func houses() *cluster {
	c := &cluster{set: &policy.Set{}}
	people := map[string]string{"gryffindor": "harry-potter", "slytherin": "draco-malfoy", "hufflepuff": "cedric-diggory", "ravenclaw": "luna-lovegood"}
	for i, house := range []string{"gryffindor", "slytherin", "hufflepuff", "ravenclaw"} {
		ns := "network-policy-conformance-" + house
		c.set.Namespaces = append(c.set.Namespaces, &policy.Namespace{Name: ns, Labels: map[string]string{"conformance-house": house}})
		for j := 0; j < 2; j++ {
			w := &policy.Workload{Namespace: ns, Name: fmt.Sprintf("%s-%d", people[house], j),
				Labels: map[string]string{"conformance-house": house},
				IPs:    []netip.Addr{netip.AddrFrom4([4]byte{10, 1, byte(i + 1), byte(j + 1)})},
				Ports: []policy.NamedPort{{Name: "web", Port: 80, Protocol: policy.TCP}, {Name: "dns", Port: 53, Protocol: policy.UDP},
					{Name: "sctp", Port: 9003, Protocol: policy.SCTP}},
			}
			c.set.Workloads = append(c.set.Workloads, w)
			c.pods = append(c.pods, ns+"/"+w.Name)
		}
	}
	return c
}

// with returns the cluster's inventory plus the decoded policies.
func (c *cluster) with(t *testing.T, src string) *policy.Engine {
	t.Helper()
	set := &policy.Set{}
	set.Merge(c.set)
	set.Merge(mustDecode(t, src))
	e, err := policy.NewEngine(set)
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	return e
}

func endpoint(t *testing.T, e *policy.Engine, ref string) policy.Endpoint {
	t.Helper()
	ep, err := e.Endpoint(ref)
	if err != nil {
		t.Fatalf("endpoint %s: %v", ref, err)
	}
	return ep
}

func allowed(t *testing.T, e *policy.Engine, from, to string, proto policy.Protocol, port int) bool {
	t.Helper()
	v := e.Evaluate(policy.Probe{From: endpoint(t, e, from), To: endpoint(t, e, to), Protocol: proto, Port: port})
	return v.Action == policy.Allow
}

// truth checks every pair of pods (but loopback, which the e2e suite
// ignores) against want.
func (c *cluster) truth(t *testing.T, e *policy.Engine, proto policy.Protocol, port int, want func(from, to string) bool) {
	t.Helper()
	var wrong []string
	for _, from := range c.pods {
		for _, to := range c.pods {
			if from == to {
				continue
			}
			if got, w := allowed(t, e, from, to, proto, port), want(from, to); got != w {
				wrong = append(wrong, fmt.Sprintf("%s -> %s %s/%d: got allowed=%v, want %v", from, to, proto, port, got, w))
			}
		}
	}
	if len(wrong) > 0 {
		t.Errorf("%d of %d connections wrong:\n  %s", len(wrong), len(c.pods)*(len(c.pods)-1), strings.Join(wrong, "\n  "))
	}
}

func nsOf(pod string) string { ns, _, _ := strings.Cut(pod, "/"); return ns }

func in(s string, list ...string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
