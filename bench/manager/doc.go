// Package benchmanager measures the manager at the scale of a cluster:
// a thousand simulated agents — real API clients, each on its own TLS
// connection — that joined, reported their workloads and follow the
// feed, and the time a policy change takes to be realized by all of
// them. See README.md; BULKHEAD_LONG=1 runs it.
package benchmanager
