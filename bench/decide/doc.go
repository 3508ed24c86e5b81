// Package benchdecide measures the decision engine (internal/decide):
// the latency of one Decide over 100 rules, p50 and p99, and the
// decisions per second one core sustains. See README.md.
package benchdecide
