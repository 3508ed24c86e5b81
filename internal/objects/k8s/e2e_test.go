package k8s

import (
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

type probe struct {
	proto policy.Protocol
	port  int
	want  func(from, to string) bool
}

func everything(string, string) bool { return true }

// TestE2E replays the kubernetes e2e network policy suite
// (test/e2e/network/netpol/network_policy.go, "Netpol NetworkPolicy between
// server and client"): each case names the upstream It().
func TestE2E(t *testing.T) {
	cases := []struct {
		upstream string
		yaml     string
		probes   []probe
	}{
		{"should support a 'default-deny-ingress' policy", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec:
  podSelector: {}
  ingress: []
`, []probe{{policy.TCP, 80, func(from, to string) bool { return nsOf(to) != "x" }}}},

		{"should support a 'default-deny-all' policy", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
`, []probe{{policy.TCP, 80, func(from, to string) bool { return nsOf(to) != "x" && nsOf(from) != "x" }}}},

		{"should enforce policy to allow traffic from pods within server namespace based on PodSelector", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: x-a-allows-x-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
`, []probe{{policy.TCP, 80, func(from, to string) bool { return to != "x/a" || from == "x/b" }}}},

		{"should enforce policy to allow ingress traffic for a target", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all-to-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector: {}
      namespaceSelector: {}
`, []probe{{policy.TCP, 80, func(from, to string) bool { return nsOf(to) != "x" || to == "x/a" }}}},

		{"should enforce policy to allow ingress traffic from pods in all namespaces", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-from-another-ns, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {}}
`, []probe{{policy.TCP, 80, everything}}},

		{"should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client-a-via-ns-selector, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}
`, []probe{{policy.TCP, 80, func(from, to string) bool { return to != "x/a" || nsOf(from) == "y" }}}},

		{"should enforce policy based on PodSelector with MatchExpressions", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: x-a-allows-x-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector:
        matchExpressions: [{key: pod, operator: In, values: [b]}]
`, []probe{{policy.TCP, 80, func(from, to string) bool { return to != "x/a" || from == "x/b" }}}},

		{"should enforce policy based on NamespaceSelector with MatchExpressions", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ns-y-match-selector, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: ["y"]}]
`, []probe{{policy.TCP, 80, func(from, to string) bool { return to != "x/a" || nsOf(from) == "y" }}}},

		{"should enforce policy based on PodSelector or NamespaceSelector", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ns-y-match-selector, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]
    - podSelector: {matchLabels: {pod: b}}
`, []probe{{policy.TCP, 80, func(from, to string) bool { return to != "x/a" || from != "x/c" }}}},

		{"should enforce policy based on PodSelector and NamespaceSelector", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ns-y-podselector-and-nsselector, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]
      podSelector: {matchLabels: {pod: b}}
`, []probe{{policy.TCP, 80, func(from, to string) bool { return to != "x/a" || in(from, "y/b", "z/b") }}}},

		{"should enforce policy based on Multiple PodSelectors and NamespaceSelectors", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-z-in-ns-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]
      podSelector:
        matchExpressions: [{key: pod, operator: In, values: [b, c]}]
`, []probe{{policy.TCP, 80, func(from, to string) bool { return to != "x/a" || in(from, "y/b", "y/c", "z/b", "z/c") }}}},

		{"should enforce policy based on any PodSelectors", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-x-b-and-x-c, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
    - podSelector: {matchLabels: {pod: c}}
`, []probe{{policy.TCP, 80, func(from, to string) bool { return to != "x/a" || in(from, "x/b", "x/c") }}}},

		{"should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ns-y-pod-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}
      podSelector: {matchLabels: {pod: a}}
`, []probe{{policy.TCP, 80, func(from, to string) bool { return to != "x/a" || from == "y/a" }}}},

		{"should enforce policy based on Ports", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ingress-on-port-81, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}
    ports:
    - port: 81
`, []probe{
			{policy.TCP, 80, func(from, to string) bool { return to != "x/a" }},
			{policy.TCP, 81, func(from, to string) bool { return to != "x/a" || nsOf(from) == "y" }},
		}},

		{"should enforce multiple, stacked policies with overlapping podSelectors", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ingress-on-port-81, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]
    ports: [{port: 81}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ingress-on-port-80, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]
    ports: [{port: 80}]
`, []probe{
			{policy.TCP, 80, func(from, to string) bool { return to != "x/a" || nsOf(from) == "y" }},
			{policy.TCP, 81, func(from, to string) bool { return to != "x/a" || nsOf(from) == "y" }},
		}},

		{"should support allow-all policy", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: x}
spec:
  podSelector: {}
  ingress: [{}]
`, []probe{{policy.TCP, 80, everything}, {policy.TCP, 81, everything}}},

		{"should allow ingress access on one named port", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports: [{port: serve-81-tcp}]
`, []probe{
			{policy.TCP, 81, everything},
			{policy.TCP, 80, func(from, to string) bool { return nsOf(to) != "x" }},
		}},

		{"should allow ingress access from namespace on one named port", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client-in-ns-y, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]
    ports: [{port: serve-80-tcp}]
`, []probe{
			{policy.TCP, 80, func(from, to string) bool { return nsOf(to) != "x" || nsOf(from) == "y" }},
			{policy.TCP, 81, func(from, to string) bool { return nsOf(to) != "x" }},
		}},

		{"should allow egress access on one named port", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-egress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - ports: [{port: serve-80-tcp}]
  - ports: [{protocol: UDP, port: 53}]
`, []probe{
			{policy.TCP, 80, everything},
			{policy.TCP, 81, func(from, to string) bool { return nsOf(from) != "x" }},
		}},

		{"should deny egress from pods based on PodSelector", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress-pod-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
`, []probe{{policy.TCP, 80, func(from, to string) bool { return from != "x/a" }}}},

		{"should deny egress from all pods in a namespace", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress-ns-x, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: []
`, []probe{{policy.TCP, 80, func(from, to string) bool { return nsOf(from) != "x" }}}},

		{"should work with Ingress, Egress specified together", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client-a-via-pod-selector, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
  egress:
  - ports: [{port: 80}]
`, []probe{
			{policy.TCP, 80, func(from, to string) bool { return to != "x/a" || from == "x/b" }},
			{policy.TCP, 81, func(from, to string) bool { return from != "x/a" && (to != "x/a" || from == "x/b") }},
		}},

		{"should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-to-ns-y-pod-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {ns: "y"}}
      podSelector: {matchLabels: {pod: a}}
`, []probe{{policy.TCP, 80, func(from, to string) bool { return from != "x/a" || to == "y/a" }}}},

		{"should enforce ingress policy allowing any port traffic to a server on a specific protocol", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ingress-by-proto, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports: [{protocol: TCP}]
`, []probe{
			{policy.TCP, 80, everything},
			{policy.TCP, 81, everything},
			{policy.UDP, 80, func(from, to string) bool { return to != "x/a" }},
		}},

		{"should enforce multiple ingress policies with ingress allow-all policy taking precedence", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client-a-via-ns-selector-80, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports: [{port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: x}
spec:
  podSelector: {}
  ingress: [{}]
`, []probe{{policy.TCP, 81, everything}}},

		{"should enforce multiple egress policies with egress allow-all policy taking precedence", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-egress-port-80, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - ports: [{port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all-egress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{}]
`, []probe{{policy.TCP, 81, everything}}},

		{"should allow egress access to server in CIDR block", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client-a-via-cidr-egress-rule, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.0.2.2/32}}]
`, []probe{{policy.TCP, 80, func(from, to string) bool { return from != "x/a" || to == "y/b" }}}},

		{"should enforce except clause while egress access to server in CIDR block", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-client-a-via-except-cidr-egress-rule, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.0.2.0/24, except: [10.0.2.2/32]}}]
`, []probe{{policy.TCP, 80, func(from, to string) bool { return from != "x/a" || in(to, "y/a", "y/c") }}}},

		{"should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-client-a-via-except-cidr-egress-rule, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.0.2.0/24, except: [10.0.2.2/32]}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client-a-via-cidr-egress-rule, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.0.2.2/32}}]
`, []probe{{policy.TCP, 80, func(from, to string) bool { return from != "x/a" || nsOf(to) == "y" }}}},

		{"should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-egress-to-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {pod: b}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress-to-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress]
`, []probe{{policy.TCP, 80, func(from, to string) bool { return to != "x/b" && (from != "x/a") }}}},

		{"should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-only-sctp-ingress-on-port-81, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports: [{protocol: SCTP, port: 81}]
`, []probe{
			{policy.TCP, 81, func(from, to string) bool { return to != "x/a" }},
			{policy.SCTP, 81, everything},
		}},

		{"should not allow access by TCP when a policy specifies only UDP", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-only-udp-ingress-on-port-81, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports: [{protocol: UDP, port: 81}]
`, []probe{
			{policy.TCP, 81, func(from, to string) bool { return to != "x/a" }},
			{policy.UDP, 81, everything},
		}},

		{"should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-to-ns-y-z-pod-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: "y"}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-from-xa, namespace: z}
spec:
  podSelector: {}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: a}}}]
`, []probe{{policy.TCP, 80, func(from, to string) bool {
			if from == "x/a" {
				return nsOf(to) == "y"
			}
			return nsOf(to) != "z"
		}}}},

		{"endPort: should enforce policy to allow ingress traffic on a port range (KEP-2079)", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-port-range, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports: [{protocol: TCP, port: 81, endPort: 90}]
`, []probe{
			{policy.TCP, 80, func(from, to string) bool { return to != "x/a" }},
			{policy.TCP, 81, everything},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.upstream, func(t *testing.T) {
			c := e2eCluster()
			e := c.with(t, tc.yaml)
			for _, p := range tc.probes {
				c.truth(t, e, p.proto, p.port, p.want)
			}
		})
	}
}
