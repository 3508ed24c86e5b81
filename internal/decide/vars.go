package decide

import (
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// The types below are what conditions see (their CEL names are
// decide.Endpoint and so on, fields as their cel tags say). Request uses
// them directly, so that a request costs no conversion.

// Endpoint is one end of an escalated connection: a workload, or an
// address outside the inventory (Workload false; only Address is set).
type Endpoint struct {
	Workload        bool              `cel:"workload"`
	Namespace       string            `cel:"namespace"`
	Name            string            `cel:"name"`
	Labels          map[string]string `cel:"labels"`
	NamespaceLabels map[string]string `cel:"namespaceLabels"`
	Identity        int64             `cel:"identity"` // the dataplane's numeric identity; 0 outside
	Image           string            `cel:"image"`    // the image digest, sha256:…
	Address         string            `cel:"address"`  // the connection's address at this end
	Host            string            `cel:"host"`
}

// Key names the endpoint for rates: namespace/name of a workload, the
// address of an outside end.
func (e *Endpoint) Key() string {
	if e.Workload {
		return e.Namespace + "/" + e.Name
	}
	return e.Address
}

// RuleRef names a policy rule that escalated a connection; Rule is the
// rule's name, or its index when it has none.
type RuleRef struct {
	Namespace string `cel:"namespace"`
	Policy    string `cel:"policy"`
	Rule      string `cel:"rule"`
}

// Escalation is why a connection was held: the escalating policy rules
// of either side, and a first access to a conflict class.
type Escalation struct {
	Rules         []RuleRef `cel:"rules"`
	ConflictClass string    `cel:"conflictClass"`
	Dataset       string    `cel:"dataset"`
}

// PastDecision is an earlier decision about the same source.
type PastDecision struct {
	Outcome     string    `cel:"outcome"`     // allow, deny, hold, quarantine
	Rule        string    `cel:"rule"`        // the deciding rule; "" for a person or the default
	By          string    `cel:"by"`          // the person who decided; ""
	Destination string    `cel:"destination"` // namespace/name or address
	Port        int       `cel:"port"`
	At          time.Time `cel:"at"`
}

// History is what the caller knows of the source: its earlier decisions
// and its conflict-class bindings (class name → dataset).
type History struct {
	Decisions []PastDecision    `cel:"decisions"`
	Bindings  map[string]string `cel:"bindings"`
}

// Now is the time of the escalation in a rule's time zone.
type Now struct {
	Time    time.Time `cel:"time"`
	Hour    int       `cel:"hour"`    // 0-23
	Minute  int       `cel:"minute"`  // 0-59
	Weekday int       `cel:"weekday"` // 0 Sunday … 6 Saturday, as CEL's getDayOfWeek
	Zone    string    `cel:"zone"`    // the zone's name, e.g. Europe/Zurich
}

func nowIn(t time.Time, loc *time.Location) Now {
	t = t.In(loc)
	return Now{Time: t, Hour: t.Hour(), Minute: t.Minute(), Weekday: int(t.Weekday()), Zone: loc.String()}
}

// Request is one escalated connection to decide. Time is when it was
// held; the engine reads no clock.
type Request struct {
	Time        time.Time
	Source      Endpoint
	Destination Endpoint
	Port        int
	Protocol    policy.Protocol
	Escalation  Escalation
	History     History
}

// RememberKey is what a remembered decision is reused for: the same
// source identity (an outside source by its address), destination
// address, protocol and port.
type RememberKey struct {
	SourceIdentity int64
	Source         string // the address of an outside source; "" for a workload
	Destination    string
	Protocol       policy.Protocol
	Port           int
}

// RememberKey is the key under which a decision about r is remembered.
func (r *Request) RememberKey() RememberKey {
	k := RememberKey{SourceIdentity: r.Source.Identity, Destination: r.Destination.Address, Protocol: r.Protocol, Port: r.Port}
	if !r.Source.Workload {
		k.SourceIdentity, k.Source = 0, r.Source.Address
	}
	return k
}
