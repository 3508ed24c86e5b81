package e2e

import (
	"context"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
)

// bindPolicy lets the processor reach both databases of a conflict class:
// its first access binds it to one, and the class denies it the other.
const bindPolicy = `apiVersion: bulkhead.dev/v1
kind: ConflictClass
metadata: {name: pay}
spec:
  datasets:
    - {name: cards, segment: cards}
    - {name: ledger, segment: ledger}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: cards}
spec: {namespaces: [pay], selector: {matchLabels: {dataset: cards}}}
---
apiVersion: bulkhead.dev/v1
kind: Segment
metadata: {name: ledger}
spec: {namespaces: [pay], selector: {matchLabels: {dataset: ledger}}}
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: dbs, namespace: pay}
spec:
  appliesTo: {selector: {matchLabels: {role: db}}}
  ingress:
    - {name: from-proc, action: allow, from: [{selector: {matchLabels: {app: proc}}}], services: [{protocol: tcp, port: 5432}]}
`

// TestBindingSurvivesRestarts: the Brewer–Nash binding made by a real
// kernel's first access holds after the agent and the manager restart —
// the other dataset stays denied, the bound one allowed — because it is
// the manager's stored record, not the memory of either process.
func TestBindingSurvivesRestarts(t *testing.T) {
	c := newClusterNamed(t, "bhwr")
	c.apply("", api.Document{Name: "bind.yaml", Data: bindPolicy})
	h := c.addHost("node-1", "192.168.215.1")
	c.addWorkload(h, "pay", "proc", "10.215.1.10", map[string]string{"app": "proc"}, nil)
	c.addWorkload(h, "pay", "cards-db", "10.215.1.21", map[string]string{"role": "db", "dataset": "cards"}, map[string]int{"postgres": 5432})
	c.addWorkload(h, "pay", "ledger-db", "10.215.1.22", map[string]string{"role": "db", "dataset": "ledger"}, map[string]int{"postgres": 5432})
	c.reported(h, 3)

	c.expect("first access binds", true, "proc", "cards-db", 5432)
	c.expect("the other dataset", false, "proc", "ledger-db", 5432)
	bound := func(when string) {
		t.Helper()
		list, err := c.admin.Bindings(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, b := range list.Items {
			if b.Class == "pay" {
				n++
				if b.Dataset != "cards" || b.Name != "proc" {
					t.Errorf("%s: binding %+v, want proc bound to cards", when, b)
				}
			}
		}
		if n != 1 {
			t.Errorf("%s: %d bindings of class pay, want 1: %+v", when, n, list.Items)
		}
	}
	bound("before the restarts")

	c.stopAgent(h)
	addr := c.addr
	c.stopManager()
	c.startManager(addr)
	c.startAgent(h)
	c.reported(h, 3)

	bound("after the restarts")
	c.expect("the other dataset, after the restarts", false, "proc", "ledger-db", 5432)
	c.expect("the bound dataset, after the restarts", true, "proc", "cards-db", 5432)
	c.expect("the other dataset, once more", false, "proc", "ledger-db", 5432)
}
