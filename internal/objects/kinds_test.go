package objects_test

import (
	"encoding/json"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/objects"
)

// kindSamples is one object of every kind, in each of its apiVersions. A
// kind added to the list without a sample here fails
// TestEveryKindRoundTrips: every kind must read, get its canonical form,
// and read back from it to the same model.
var kindSamples = map[string]string{
	"Namespace": "apiVersion: bulkhead.dev/v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: a}}\n---\n" +
		"apiVersion: v1\nkind: Namespace\nmetadata: {name: lab, labels: {team: b}}\n",
	"Segment": "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: buy}\nspec: {selector: {matchLabels: {desk: buy}}}\n",
	"Policy": `apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: shop}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress: [{name: web, action: allow, from: [{selector: {matchLabels: {app: web}}}], services: [{protocol: tcp, port: pg}]}]
`,
	"NetworkPolicy": `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}], ports: [{port: 5432}]}]
`,
	"AdminNetworkPolicy": `apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: a}
spec:
  priority: 10
  subject: {namespaces: {}}
  ingress: [{name: r, action: Deny, from: [{namespaces: {matchLabels: {team: b}}}]}]
`,
	"BaselineAdminNetworkPolicy": `apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress: [{name: r, action: Deny, from: [{namespaces: {}}]}]
`,
	"ClusterNetworkPolicy": `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: c}
spec:
  tier: Admin
  priority: 5
  subject: {namespaces: {}}
  ingress: [{name: r, action: Deny, from: [{namespaces: {matchLabels: {team: b}}}]}]
`,
	"Wall": "apiVersion: bulkhead.dev/v1\nkind: Wall\nmetadata: {name: w}\nspec: {segments: [buy, sell]}\n",
	"ConflictClass": "apiVersion: bulkhead.dev/v1\nkind: ConflictClass\nmetadata: {name: c}\n" +
		"spec: {datasets: [{name: cards, segment: card-data}, {name: ledger, segment: ledger-data}]}\n---\n" +
		"apiVersion: bulkhead.dev/v1\nkind: ConflictClass\nmetadata: {name: d}\n" +
		"spec: {scope: window, window: 8h, datasets: [{name: cards, segment: card-data}, {name: ledger, segment: ledger-data}]}\n",
	"DecisionRule": `apiVersion: bulkhead.dev/v1
kind: DecisionRule
metadata: {name: office-hours}
spec:
  order: 10
  escalations:
    rules: [{namespace: shop, policy: db, rule: ask}]
    from: {namespaces: [shop], selector: {matchLabels: {app: web}}}
    to: {cidrs: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]}
  condition: now.hour >= 8 && now.hour < 18 && rate(duration("1m")) < 10
  outcome: hold
  holdTimeout: 5m
  onTimeout: deny
  remember: 1h
  timeZone: Europe/Zurich
`,
	"Workload": "apiVersion: bulkhead.dev/v1\nkind: Workload\nmetadata: {name: db-0, namespace: shop, labels: {app: db}}\n" +
		"spec: {ips: [10.0.0.5], ports: [{name: pg, port: 5432, protocol: TCP}, {port: 8080, protocol: TCP}]}\n",
}

func TestEveryKindRoundTrips(t *testing.T) {
	for _, k := range objects.Kinds() {
		doc, ok := kindSamples[k.Name]
		if !ok {
			t.Errorf("kind %s has no sample in kindSamples", k.Name)
			continue
		}
		objs, errs := objects.Read(k.Name+".yaml", []byte(doc))
		if len(errs) > 0 {
			t.Errorf("kind %s: %v", k.Name, errs)
			continue
		}
		versions := map[string]bool{}
		for _, o := range objs {
			if o.Ref.Kind != k.Name {
				t.Errorf("a sample of %s read as %s", k.Name, objects.String(o.Ref))
			}
			s := mustStored(t, o)
			if string(s.Canon) != string(o.Canon) || !sameModel(o.Set, s.Set) {
				t.Errorf("%s: the canonical form does not read back to the same object:\n%s\n%s", objects.String(o.Ref), o.Canon, s.Canon)
			}
			versions[apiVersionOf(o.Canon)] = true
		}
		for _, v := range k.APIVersions {
			if !versions[v] {
				t.Errorf("kind %s: no sample written as %s", k.Name, v)
			}
		}
	}
}

func apiVersionOf(canon []byte) string {
	var v struct {
		APIVersion string `json:"apiVersion"`
	}
	json.Unmarshal(canon, &v)
	return v.APIVersion
}
