// Package objects is the one way in for Bulkhead's objects. It owns
// documents: splitting YAML streams and JSON values into objects (a List
// read as its items), the one list of kinds and the names users call them
// by, refs and their keys, native (bulkhead.dev/v1) and Kubernetes
// decoding (internal/objects/k8s), validation with file:line:col and
// field paths, and the canonical form that is stored, hashed, sent to
// agents and printed by `get`.
//
// The canonical form is written from the values the decoder read, not
// from a generic decode of the YAML, so that it decodes to exactly the
// model that was validated and proven: a label written 0x10 stays the
// string "0x10" everywhere. `bulkhead check`, the agent, the manager and
// the CNI plugin read objects only through this package; internal/policy
// holds the model and its semantics and imports no wire format.
package objects
