// Package e2e holds Bulkhead's whole-system tests: a manager, several
// hosts as network namespaces joined by an underlay, agents enforcing in
// each host's nftables, and workloads making real connections between
// them. They need root (nstest.RequireRoot) and run in throwaway
// namespaces only.
package e2e
