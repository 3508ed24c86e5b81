// Package policy is Bulkhead's policy engine: the model (tiers, ordered
// rules, peers, services, segments, walls, conflict classes, the inventory),
// the native object decoder, validation, the reference evaluator with its
// connection-tracking wrapper, explain, and the proof of walls. It is pure Go
// with no I/O; the compiled dataplane and the kernel are tested against it.
package policy
