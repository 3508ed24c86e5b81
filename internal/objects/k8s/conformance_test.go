package k8s

import (
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

const (
	gryffindor = "network-policy-conformance-gryffindor"
	slytherin  = "network-policy-conformance-slytherin"
	hufflepuff = "network-policy-conformance-hufflepuff"
	ravenclaw  = "network-policy-conformance-ravenclaw"
)

type poke struct {
	from, to string
	proto    policy.Protocol
	port     int
	want     bool
}

// TestConformance replays scenarios of the network-policy-api conformance
// suite (conformance/tests/*.go); each case names the upstream test and
// sub-test.
func TestConformance(t *testing.T) {
	const hp0, hp1 = gryffindor + "/harry-potter-0", gryffindor + "/harry-potter-1"
	const dm0, dm1 = slytherin + "/draco-malfoy-0", slytherin + "/draco-malfoy-1"
	const cd0, ll0 = hufflepuff + "/cedric-diggory-0", ravenclaw + "/luna-lovegood-0"
	// passExample is shaped like api_integration/core-anp-np-banp.yaml:
	// an ANP denying gryffindor<->slytherin (action given per case), a
	// NetworkPolicy allowing it, and a BANP denying it.
	passExample := func(action string, withNP bool) string {
		s := `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: pass-example}
spec:
  priority: 10
  subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}
  ingress:
  - name: ingress-from-slytherin
    action: ` + action + `
    from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]
  egress:
  - name: egress-to-slytherin
    action: ` + action + `
    to: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}
  ingress:
  - {name: deny-from-slytherin, action: Deny, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}
  egress:
  - {name: deny-to-slytherin, action: Deny, to: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}
`
		if withNP {
			s += `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-gress-from-to-slytherin-to-gryffindor, namespace: network-policy-conformance-gryffindor}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress: [{from: [{namespaceSelector: {matchLabels: {conformance-house: slytherin}}}]}]
  egress: [{to: [{namespaceSelector: {matchLabels: {conformance-house: slytherin}}}]}]
`
		}
		return s
	}
	cases := []struct {
		upstream string
		yaml     string
		pokes    []poke
	}{
		{"AdminNetworkPolicyIntegration/Should Deny traffic from slytherin to gryffindor respecting ANP", passExample("Deny", true),
			[]poke{{dm0, hp0, policy.TCP, 80, false}, {dm1, hp0, policy.TCP, 8080, false}, {hp0, dm0, policy.TCP, 80, false}}},
		{"AdminNetworkPolicyIntegration/Should support a 'pass-ingress' policy for ANP and respect the match for network policy", passExample("Pass", true),
			[]poke{{dm0, hp0, policy.TCP, 80, true}, {dm1, hp0, policy.TCP, 8080, true}, {hp0, dm0, policy.TCP, 80, true},
				// the NetworkPolicy isolates gryffindor: hufflepuff is denied
				{cd0, hp0, policy.TCP, 80, false}}},
		{"AdminNetworkPolicyIntegration/Should support a 'pass-ingress' policy for ANP and respect the match for baseline admin network policy", passExample("Pass", false),
			[]poke{{dm0, hp0, policy.TCP, 80, false}, {dm1, hp0, policy.TCP, 8080, false}, {hp0, dm0, policy.TCP, 80, false},
				{cd0, hp0, policy.TCP, 80, true}}},
		{"AdminNetworkPolicyPriorityField/Should Deny traffic from slytherin to gryffindor respecting ANP", `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: old-priority-60-new-priority-40}
spec:
  priority: 60
  subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}
  ingress:
  - {name: allow-from-slytherin, action: Allow, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: priority-50}
spec:
  priority: 50
  subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}
  ingress:
  - {name: deny-from-slytherin, action: Deny, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}
`, []poke{{dm0, hp0, policy.TCP, 80, false}, {cd0, hp0, policy.TCP, 80, true}}},
		{"AdminNetworkPolicyPriorityField/Should Allow traffic from slytherin to gryffindor after the priority change", `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: old-priority-60-new-priority-40}
spec:
  priority: 40
  subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}
  ingress:
  - {name: allow-from-slytherin, action: Allow, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: priority-50}
spec:
  priority: 50
  subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}
  ingress:
  - {name: deny-from-slytherin, action: Deny, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]}
`, []poke{{dm0, hp0, policy.TCP, 80, true}}},
		{"AdminNetworkPolicyIngressTCP/Should support an 'allow-ingress' policy for TCP protocol; ensure rule ordering is respected", `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: ingress-tcp}
spec:
  priority: 8
  subject: {namespaces: {matchLabels: {conformance-house: ravenclaw}}}
  ingress:
  - name: allow-from-gryffindor-at-port-80
    action: Allow
    from: [{namespaces: {matchLabels: {conformance-house: gryffindor}}}]
    ports: [{portNumber: {protocol: TCP, port: 80}}]
  - name: deny-from-gryffindor-everything-else
    action: Deny
    from: [{namespaces: {matchLabels: {conformance-house: gryffindor}}}]
`, []poke{{hp0, ll0, policy.TCP, 80, true}, {hp1, ll0, policy.TCP, 8080, false}, {hp0, ll0, policy.UDP, 53, false}, {dm0, ll0, policy.TCP, 8080, true}}},
		{"AdminNetworkPolicyIngressSCTP/Should support a 'deny-ingress' policy for SCTP protocol", `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: ingress-sctp}
spec:
  priority: 10
  subject: {namespaces: {matchLabels: {conformance-house: slytherin}}}
  ingress:
  - name: deny-from-gryffindor-at-port-9003
    action: Deny
    from: [{namespaces: {matchLabels: {conformance-house: gryffindor}}}]
    ports: [{portNumber: {protocol: SCTP, port: 9003}}]
`, []poke{{hp0, dm0, policy.SCTP, 9003, false}, {hp0, dm0, policy.SCTP, 9005, true}, {hp0, dm0, policy.TCP, 9003, true}}},
		{"AdminNetworkPolicyEgressUDP/Should support a 'pass-egress' policy for UDP protocol", `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: egress-udp}
spec:
  priority: 6
  subject: {namespaces: {matchLabels: {conformance-house: hufflepuff}}}
  egress:
  - name: pass-to-ravenclaw-at-port-53
    action: Pass
    to: [{namespaces: {matchLabels: {conformance-house: ravenclaw}}}]
    ports: [{portNumber: {protocol: UDP, port: 53}}]
  - name: deny-to-ravenclaw-everything-else
    action: Deny
    to: [{namespaces: {matchLabels: {conformance-house: ravenclaw}}}]
`, []poke{{cd0, ll0, policy.UDP, 53, true}, {cd0, ll0, policy.UDP, 5353, false}, {cd0, hp0, policy.UDP, 5353, true}}},
		{"AdminNetworkPolicyIngressNamedPort (extended)/Should support an 'allow-ingress' policy for named port", `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: ingress-named-port}
spec:
  priority: 16
  subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}
  ingress:
  - name: allow-all-ingress-from-slytherin-on-named-port
    action: Allow
    from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]
    ports: [{namedPort: web}]
  - name: deny-all-ingress-from-slytherin
    action: Deny
    from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]
`, []poke{{dm0, hp0, policy.TCP, 80, true}, {dm0, hp0, policy.TCP, 8080, false}, {dm0, hp0, policy.UDP, 80, false}}},
		{"AdminNetworkPolicyEgressNodePeers (experimental)/nodes peers match nothing in the inventory", `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: node-as-egress-peer}
spec:
  priority: 75
  subject: {namespaces: {}}
  egress:
  - name: deny-egress-to-nodes
    action: Deny
    to: [{nodes: {matchLabels: {kubernetes.io/os: linux}}}]
`, []poke{{hp0, dm0, policy.TCP, 80, true}, {hp0, "192.0.2.10", policy.TCP, 80, true}}},
		{"AdminNetworkPolicyEgressInlineCIDRPeers (standard)/Should support an 'allow-egress' policy to specific pod IPs with networks", `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: inline-cidr-as-peers-example}
spec:
  priority: 85
  subject:
    pods:
      namespaceSelector: {matchLabels: {conformance-house: gryffindor}}
      podSelector: {matchLabels: {conformance-house: gryffindor}}
  egress:
  - name: allow-egress-to-specific-podIPs
    action: Allow
    to: [{networks: [10.1.4.1/32, 10.1.3.1/32]}]
  - name: deny-egress-to-everything-else
    action: Deny
    to: [{networks: [0.0.0.0/0]}]
`, []poke{{hp0, ll0, policy.TCP, 80, true}, {hp0, cd0, policy.UDP, 53, true}, {hp0, dm0, policy.TCP, 80, false}, {hp0, "8.8.8.8", policy.UDP, 53, false}}},
		{"BaselineAdminNetworkPolicyIngressTCP/Should support an 'allow-ingress' policy for TCP protocol; ensure rule ordering is respected", `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {matchLabels: {conformance-house: ravenclaw}}}
  ingress:
  - name: allow-from-gryffindor-at-port-80
    action: Allow
    from: [{namespaces: {matchLabels: {conformance-house: gryffindor}}}]
    ports: [{portNumber: {protocol: TCP, port: 80}}]
  - name: deny-from-gryffindor-everything-else
    action: Deny
    from: [{namespaces: {matchLabels: {conformance-house: gryffindor}}}]
`, []poke{{hp0, ll0, policy.TCP, 80, true}, {hp0, ll0, policy.TCP, 8080, false}}},
		{"BaselineAdminNetworkPolicyGress/NetworkPolicy overrides the BANP for the pods it selects", `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress:
  - {name: deny-all, action: Deny, from: [{namespaces: {}}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-from-slytherin, namespace: network-policy-conformance-gryffindor}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {conformance-house: slytherin}}}]}]
`, []poke{{dm0, hp0, policy.TCP, 80, true}, {cd0, hp0, policy.TCP, 80, false}, {hp0, dm0, policy.TCP, 80, false}}},
		{"AdminNetworkPolicyGress/ANP Allow wins over a NetworkPolicy that isolates the pod", `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: allow-monitoring}
spec:
  priority: 5
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {conformance-house: gryffindor}}}}
  ingress:
  - {name: allow-ravenclaw, action: Allow, from: [{pods: {namespaceSelector: {matchLabels: {conformance-house: ravenclaw}}, podSelector: {}}}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: network-policy-conformance-gryffindor}
spec:
  podSelector: {}
`, []poke{{ll0, hp0, policy.TCP, 80, true}, {dm0, hp0, policy.TCP, 80, false}}},
		{"ClusterNetworkPolicy v1alpha2 (Admin tier, Accept/Pass, protocols)", `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: admin-gryffindor}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}
  ingress:
  - name: accept-web-from-slytherin
    action: Accept
    from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]
    protocols: [{destinationNamedPort: web}]
  - name: pass-dns-from-slytherin
    action: Pass
    from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]
    protocols: [{udp: {destinationPort: {number: 53}}}, {tcp: {destinationPort: {range: {start: 8000, end: 8100}}}}]
  - name: deny-rest-from-slytherin
    action: Deny
    from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: baseline-gryffindor}
spec:
  tier: Baseline
  priority: 10
  subject: {namespaces: {matchLabels: {conformance-house: gryffindor}}}
  ingress:
  - {name: deny-tcp-from-slytherin, action: Deny, from: [{namespaces: {matchLabels: {conformance-house: slytherin}}}], protocols: [{tcp: {destinationPort: {number: 8080}}}]}
`, []poke{{dm0, hp0, policy.TCP, 80, true}, {dm0, hp0, policy.UDP, 53, true}, {dm0, hp0, policy.TCP, 8080, false},
			{dm0, hp0, policy.UDP, 5353, false}, {cd0, hp0, policy.TCP, 8080, true}}},
	}
	for _, tc := range cases {
		t.Run(tc.upstream, func(t *testing.T) {
			e := houses().with(t, tc.yaml)
			for _, p := range tc.pokes {
				if got := allowed(t, e, p.from, p.to, p.proto, p.port); got != p.want {
					t.Errorf("%s -> %s %s/%d: allowed=%v, want %v", p.from, p.to, p.proto, p.port, got, p.want)
				}
			}
		})
	}
}
