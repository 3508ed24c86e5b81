package k8s

import (
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func TestHandles(t *testing.T) {
	for _, tc := range []struct {
		apiVersion, kind string
		want             bool
	}{
		{"networking.k8s.io/v1", "NetworkPolicy", true},
		{"policy.networking.k8s.io/v1alpha1", "AdminNetworkPolicy", true},
		{"policy.networking.k8s.io/v1alpha1", "BaselineAdminNetworkPolicy", true},
		{"policy.networking.k8s.io/v1alpha2", "ClusterNetworkPolicy", true},
		{"v1", "Namespace", true},
		{"v1", "Pod", false},
		{"policy.networking.k8s.io/v1alpha1", "ClusterNetworkPolicy", false},
		{"bulkhead.dev/v1", "Policy", false},
	} {
		if got := Handles(tc.apiVersion, tc.kind); got != tc.want {
			t.Errorf("Handles(%q, %q) = %v, want %v", tc.apiVersion, tc.kind, got, tc.want)
		}
	}
}

// TestConvert checks the shape of converted policies for the traps of the
// upstream semantics.
func TestConvert(t *testing.T) {
	set := mustDecode(t, `
apiVersion: v1
kind: Namespace
metadata:
  name: x
  labels: {ns: x}
  uid: 0d3c
  resourceVersion: "12"
  creationTimestamp: 2024-01-01T00:00:00Z
  managedFields: [{manager: kubectl}]
status: {phase: Active}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: x, generation: 3}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
    - namespaceSelector: {}
    - namespaceSelector: {matchLabels: {ns: y}}
      podSelector: {matchLabels: {pod: c}}
    - ipBlock: {cidr: 10.0.0.1/16, except: [10.0.1.0/24]}
    ports:
    - {}
    - {protocol: UDP, port: 53}
    - {port: http}
    - {protocol: SCTP, port: 1000, endPort: 2000}
  egress:
  - {}
status: {}
`)
	if len(set.Namespaces) != 1 || set.Namespaces[0].Labels[policy.MetadataNameLabel] != "x" {
		t.Fatalf("namespace: %+v", set.Namespaces)
	}
	p := set.Policies[0]
	if p.Tier != policy.Application || p.Kind != "NetworkPolicy" || !p.Isolate[policy.Ingress] || !p.Isolate[policy.Egress] {
		t.Errorf("policy: tier %v kind %s isolate %v", p.Tier, p.Kind, p.Isolate)
	}
	if p.Pos.Line != 13 || p.Ingress[0].Pos.Line != 19 {
		t.Errorf("positions: policy %v rule %v", p.Pos, p.Ingress[0].Pos)
	}
	r := p.Ingress[0]
	if r.ID != "NetworkPolicy/x/np/ingress/0" || r.Action != policy.Allow {
		t.Errorf("rule id %q action %v", r.ID, r.Action)
	}
	peers := r.Peers
	if len(peers) != 4 {
		t.Fatalf("peers: %+v", peers)
	}
	if got := peers[0].Namespaces.Names; len(got) != 1 || got[0] != "x" {
		t.Errorf("podSelector-only peer must be in the policy's namespace, got %+v", peers[0].Namespaces)
	}
	if !peers[1].Namespaces.All() || !peers[1].Workloads.Empty() {
		t.Errorf("namespaceSelector {} must be every pod of every namespace, got %+v", peers[1])
	}
	if peers[2].Namespaces.Selector == nil || peers[2].Workloads.MatchLabels["pod"] != "c" {
		t.Errorf("namespaceSelector+podSelector must be one AND peer, got %+v", peers[2])
	}
	if c := peers[3].CIDRs[0]; c.Prefix.String() != "10.0.0.0/16" || c.Except[0].String() != "10.0.1.0/24" {
		t.Errorf("ipBlock: %+v", c)
	}
	want := []policy.Service{{Protocol: policy.TCP}, {Protocol: policy.UDP, Port: 53}, {Protocol: policy.TCP, Name: "http"}, {Protocol: policy.SCTP, Port: 1000, EndPort: 2000}}
	for i, s := range want {
		if i >= len(r.Services) || r.Services[i] != s {
			t.Errorf("services[%d] = %+v, want %+v", i, r.Services, s)
		}
	}
	if len(p.Egress) != 1 || len(p.Egress[0].Peers) != 0 || len(p.Egress[0].Services) != 0 {
		t.Errorf("egress [{}] must be one allow-all rule, got %+v", p.Egress)
	}
}

// TestPolicyTypes covers upstream defaulting of spec.policyTypes.
func TestPolicyTypes(t *testing.T) {
	for _, tc := range []struct {
		spec    string
		isolate [2]bool
		nIn     int
		nEg     int
	}{
		{"podSelector: {}", [2]bool{true, false}, 0, 0},
		{"podSelector: {}\n  egress: []", [2]bool{true, false}, 0, 0},
		{"podSelector: {}\n  egress: [{}]", [2]bool{true, true}, 0, 1},
		{"podSelector: {}\n  policyTypes: [Egress]\n  ingress: [{}]", [2]bool{false, true}, 0, 0},
		{"podSelector: {}\n  ingress: [{}]", [2]bool{true, false}, 1, 0},
	} {
		set := mustDecode(t, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec:\n  "+tc.spec+"\n")
		p := set.Policies[0]
		if p.Namespace != "default" {
			t.Errorf("namespace %q, want default", p.Namespace)
		}
		if p.Isolate != tc.isolate || len(p.Ingress) != tc.nIn || len(p.Egress) != tc.nEg {
			t.Errorf("%q: isolate %v, %d ingress, %d egress; want %v, %d, %d", tc.spec, p.Isolate, len(p.Ingress), len(p.Egress), tc.isolate, tc.nIn, tc.nEg)
		}
	}
}

func TestConvertAdmin(t *testing.T) {
	set := mustDecode(t, `
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: anp}
spec:
  priority: 7
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}
  egress:
  - name: to-net
    action: Pass
    to: [{networks: [192.0.2.0/24]}]
    ports: [{portRange: {protocol: UDP, start: 1000, end: 2000}}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: cnp}
spec:
  tier: Baseline
  priority: 3
  subject: {namespaces: {}}
  ingress:
  - {action: Accept, from: [{namespaces: {}}]}
`)
	anp, cnp := set.Policies[0], set.Policies[1]
	if anp.Tier != policy.Environment || anp.Priority != 7 || anp.Namespace != "" || anp.Subject.Workloads.MatchLabels["app"] != "db" {
		t.Errorf("anp: %+v", anp)
	}
	r := anp.Egress[0]
	if r.Name != "to-net" || r.Action != policy.Pass || r.ID != "AdminNetworkPolicy/anp/egress/0" ||
		r.Peers[0].CIDRs[0].Prefix.String() != "192.0.2.0/24" || r.Services[0] != (policy.Service{Protocol: policy.UDP, Port: 1000, EndPort: 2000}) {
		t.Errorf("anp rule: %+v", r)
	}
	if cnp.Tier != policy.Baseline || cnp.Priority != 3 || cnp.Ingress[0].Action != policy.Allow || !cnp.Subject.Namespaces.All() {
		t.Errorf("cnp: %+v", cnp)
	}
}

func TestList(t *testing.T) {
	set := mustDecode(t, `
apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: v1
  kind: Namespace
  metadata: {name: a}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: p, namespace: a}
  spec: {podSelector: {}}
`)
	if len(set.Namespaces) != 1 || len(set.Policies) != 1 {
		t.Fatalf("list: %d namespaces, %d policies", len(set.Namespaces), len(set.Policies))
	}
	_, errs := decodeAll("l.yaml", "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: A}\n")
	if len(errs) != 1 || errs[0].Path != "items[0].metadata.name" {
		t.Errorf("list item error: %v", errs)
	}
}

// TestInvalid checks the upstream validation rules: every case must fail
// with an error at the given path whose message contains want.
func TestInvalid(t *testing.T) {
	np := func(spec string) string {
		return "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n" + spec
	}
	anp := func(spec string) string {
		return "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {name: a}\nspec:\n" + spec
	}
	cnp := func(spec string) string {
		return "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: c}\nspec:\n" + spec
	}
	const subj = "  priority: 1\n  subject: {namespaces: {}}\n"
	cases := []struct{ name, yaml, path, want string }{
		{"unknown spec field", np("  podSelector: {}\n  ingres: []\n"), "spec.ingres", "unknown field"},
		{"to in an ingress rule", np("  ingress: [{to: []}]\n"), "spec.ingress[0].to", "unknown field"},
		{"missing name", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: x}\n", "metadata.name", "required"},
		{"bad name", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: Bad_Name}\n", "metadata.name", "RFC 1123 subdomain"},
		{"namespace name", "apiVersion: v1\nkind: Namespace\nmetadata: {name: a.b}\n", "metadata.name", "RFC 1123 label"},
		{"protocol", np("  ingress: [{ports: [{protocol: tcp, port: 80}]}]\n"), "spec.ingress[0].ports[0].protocol", "TCP, UDP, SCTP"},
		{"port 0", np("  ingress: [{ports: [{port: 0}]}]\n"), "spec.ingress[0].ports[0].port", "1 to 65535"},
		{"port 65536", np("  ingress: [{ports: [{port: 65536}]}]\n"), "spec.ingress[0].ports[0].port", "1 to 65535"},
		{"named port", np("  ingress: [{ports: [{port: Serve_80}]}]\n"), "spec.ingress[0].ports[0].port", "IANA service name"},
		{"named port without letter", np("  ingress: [{ports: [{port: \"80-81\"}]}]\n"), "spec.ingress[0].ports[0].port", "at least one letter"},
		{"endPort without port", np("  ingress: [{ports: [{endPort: 90}]}]\n"), "spec.ingress[0].ports[0].endPort", "without port"},
		{"endPort with named port", np("  ingress: [{ports: [{port: http, endPort: 90}]}]\n"), "spec.ingress[0].ports[0].endPort", "named port"},
		{"endPort below port", np("  ingress: [{ports: [{port: 90, endPort: 80}]}]\n"), "spec.ingress[0].ports[0].endPort", "greater than or equal"},
		{"empty peer", np("  ingress: [{from: [{}]}]\n"), "spec.ingress[0].from[0]", "must specify a peer"},
		{"ipBlock and selector", np("  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]\n"), "spec.ingress[0].from[0]", "both ipBlock"},
		{"bad cidr", np("  egress: [{to: [{ipBlock: {cidr: 10.0.0.0}}]}]\n"), "spec.egress[0].to[0].ipBlock.cidr", "10.0.0.0/8"},
		{"except outside cidr", np("  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]}]\n"), "spec.egress[0].to[0].ipBlock.except[0]", "strict subset"},
		{"except equal to cidr", np("  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.0/16]}}]}]\n"), "spec.egress[0].to[0].ipBlock.except[0]", "strict subset"},
		{"policy type", np("  policyTypes: [ingress]\n"), "spec.policyTypes[0]", "Ingress, Egress"},
		{"In without values", np("  podSelector: {matchExpressions: [{key: a, operator: In}]}\n"), "spec.podSelector.matchExpressions[0].values", "must be given"},
		{"Exists with values", np("  podSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}\n"), "spec.podSelector.matchExpressions[0].values", "must not be given"},
		{"bad operator", np("  podSelector: {matchExpressions: [{key: a, operator: Equals, values: [b]}]}\n"), "spec.podSelector.matchExpressions[0].operator", "In, NotIn, Exists, DoesNotExist"},
		{"bad label value", np("  podSelector: {matchLabels: {a: \"-x\"}}\n"), "spec.podSelector.matchLabels.a", "label value"},
		{"anp priority", anp("  priority: 1001\n  subject: {namespaces: {}}\n"), "spec.priority", "0 (first) to 1000"},
		{"anp priority missing", anp("  subject: {namespaces: {}}\n"), "spec.priority", "required"},
		{"anp subject both", anp("  priority: 1\n  subject: {namespaces: {}, pods: {namespaceSelector: {}, podSelector: {}}}\n"), "spec.subject", "exactly one"},
		{"anp action", anp(subj + "  ingress: [{action: Accept, from: [{namespaces: {}}]}]\n"), "spec.ingress[0].action", "Allow, Deny, Pass"},
		{"anp empty from", anp(subj + "  ingress: [{action: Allow, from: []}]\n"), "spec.ingress[0].from", "at least one"},
		{"anp networks in ingress", anp(subj + "  ingress: [{action: Allow, from: [{networks: [10.0.0.0/8]}]}]\n"), "spec.ingress[0].from[0].networks", "unknown field"},
		{"anp peer two fields", anp(subj + "  egress: [{action: Deny, to: [{namespaces: {}, networks: [10.0.0.0/8]}]}]\n"), "spec.egress[0].to[0]", "exactly one"},
		{"anp 4in6", anp(subj + "  egress: [{action: Deny, to: [{networks: [\"::ffff:10.0.0.0/104\"]}]}]\n"), "spec.egress[0].to[0].networks[0]", "IPv4 embedded"},
		{"anp named port to networks", anp(subj + "  egress: [{action: Deny, to: [{networks: [10.0.0.0/8]}], ports: [{namedPort: web}]}]\n"), "spec.egress[0]", "named port"},
		{"anp port range", anp(subj + "  egress: [{action: Deny, to: [{namespaces: {}}], ports: [{portRange: {start: 90, end: 90}}]}]\n"), "spec.egress[0].ports[0].portRange", "less than end"},
		{"anp port two fields", anp(subj + "  egress: [{action: Deny, to: [{namespaces: {}}], ports: [{namedPort: a, portNumber: {port: 1}}]}]\n"), "spec.egress[0].ports[0]", "exactly one"},
		{"anp empty ports", anp(subj + "  egress: [{action: Deny, to: [{namespaces: {}}], ports: []}]\n"), "spec.egress[0].ports", "1 to 100"},
		{"anp sameLabels", anp("  priority: 1\n  subject: {namespaces: {}}\n  ingress: [{action: Deny, from: [{namespaces: {sameLabels: [tenant]}}]}]\n"), "spec.ingress[0].from[0].namespaces.sameLabels", "removed"},
		{"anp domainNames", anp(subj + "  egress: [{action: Allow, to: [{domainNames: [example.com]}]}]\n"), "spec.egress[0].to[0].domainNames", "not supported"},
		{"banp name", "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {name: other}\nspec: {subject: {namespaces: {}}}\n", "metadata.name", `"default"`},
		{"banp pass", "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {name: default}\nspec:\n  subject: {namespaces: {}}\n  ingress: [{action: Pass, from: [{namespaces: {}}]}]\n", "spec.ingress[0].action", "Allow, Deny"},
		{"banp priority", "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {name: default}\nspec: {priority: 3, subject: {namespaces: {}}}\n", "spec.priority", "unknown field"},
		{"cnp tier", cnp("  tier: Application\n" + subj), "spec.tier", "Admin, Baseline"},
		{"cnp action", cnp("  tier: Admin\n" + subj + "  ingress: [{action: Allow, from: [{namespaces: {}}]}]\n"), "spec.ingress[0].action", "Accept, Deny, Pass"},
		{"cnp ports field", cnp("  tier: Admin\n" + subj + "  ingress: [{action: Deny, from: [{namespaces: {}}], ports: []}]\n"), "spec.ingress[0].ports", "unknown field"},
		{"cnp empty tcp", cnp("  tier: Admin\n" + subj + "  ingress: [{action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {}}]}]\n"), "spec.ingress[0].protocols[0].tcp.destinationPort", "required"},
		{"cnp two protocols", cnp("  tier: Admin\n" + subj + "  ingress: [{action: Deny, from: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {number: 1}}, udp: {destinationPort: {number: 1}}}]}]\n"), "spec.ingress[0].protocols[0]", "exactly one"},
		{"cnp range", cnp("  tier: Admin\n" + subj + "  ingress: [{action: Deny, from: [{namespaces: {}}], protocols: [{udp: {destinationPort: {range: {start: 9, end: 2}}}}]}]\n"), "spec.ingress[0].protocols[0].udp.destinationPort.range", "less than end"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, errs := decodeAll("bad.yaml", tc.yaml)
			if len(errs) == 0 {
				t.Fatalf("no error; converted %+v", set.Policies)
			}
			for _, e := range errs {
				if e.Pos.File != "bad.yaml" || e.Pos.Line == 0 {
					t.Errorf("error without a position: %v", e)
				}
				if e.Path == tc.path && strings.Contains(e.Msg, tc.want) {
					return
				}
			}
			t.Errorf("want an error at %s containing %q, got:\n%v", tc.path, tc.want, errs.Err())
		})
	}
}

// TestAllErrors checks that every problem of a document is reported.
func TestAllErrors(t *testing.T) {
	_, errs := decodeAll("bad.yaml", `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports: [{protocol: ICMP}, {port: 0}]
    from: [{}]
  policyTypes: [Ingress, Ingress]
`)
	if len(errs) != 4 {
		t.Errorf("want 4 errors, got %d:\n%v", len(errs), errs.Err())
	}
}
