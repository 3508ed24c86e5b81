// Package flows measures flow collection (internal/flows) at the highest
// connection rate this machine makes between two namespaces: every flow
// delivered or counted as lost, and the collection's cost to that rate as
// a ratio against collection off, in the same run. See README.md.
package flows
