package dptest

import (
	"os"
	"testing"
)

// Case is one conformance case.
type Case struct {
	Name string
	Run  func(w *World)
}

// Run runs every conformance case against h, each on a fresh host.
func Run(t *testing.T, h Harness) { RunKnown(t, h, nil) }

// RunKnown is Run for an implementation with known failures: a case named
// in known (name → the bug, where it is tracked) is skipped with that
// reason, unless BULKHEAD_STRICT=1. Remove an entry when its bug is fixed.
func RunKnown(t *testing.T, h Harness, known map[string]string) {
	strict := os.Getenv("BULKHEAD_STRICT") == "1"
	for _, c := range Cases() {
		t.Run(c.Name, func(t *testing.T) {
			if why, ok := known[c.Name]; ok && !strict {
				t.Skipf("known failure of %s (BULKHEAD_STRICT=1 runs it): %s", h.Name(), why)
			}
			c.Run(NewWorld(t, h))
		})
	}
}

// Cases lists the conformance cases.
func Cases() []Case {
	return append(basicCases(), stateCases()...)
}

// The policy documents the cases share.
const (
	// denyIngress isolates every workload for ingress: zero trust for
	// incoming connections, outgoing ones left open.
	denyIngress = `
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: deny-ingress}
spec:
  tier: baseline
  appliesTo: {selector: {}}
  ingress: [{name: deny-all, action: deny}]
`
	// denyAll denies every connection in both directions.
	denyAll = `
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: deny-all}
spec:
  tier: baseline
  appliesTo: {selector: {}}
  ingress: [{name: deny-in, action: deny}]
  egress: [{name: deny-out, action: deny}]
`
)

// Addresses of the usual cast. Each case has its own host, so cases may
// reuse them.
const (
	webAddrs   = "10.77.0.1 fd77::1"
	dbAddrs    = "10.77.0.2 fd77::2"
	otherAddrs = "10.77.0.3 fd77::3"
)

// cast attaches web (app=web), db (app=db, port pg=5432) and other
// (app=other) in namespace app.
func cast(w *World) (web, db, other *WL) {
	web = w.Add("app/web", "app=web", webAddrs, "")
	db = w.Add("app/db", "app=db", dbAddrs, "pg/tcp/5432")
	other = w.Add("app/other", "app=other", otherAddrs, "")
	return web, db, other
}
