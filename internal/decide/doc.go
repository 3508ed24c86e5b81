// Package decide is the decision engine for escalated connections: it
// compiles DecisionRule objects (conditions in CEL, cel.dev/cel-go) and
// answers, for one held connection, whether it is allowed, denied, held
// for an operator or its source quarantined, and for how long the answer
// may be remembered. It does no I/O: the caller gives the connection, the
// time and the source's history, and keeps what it decides.
//
// Conditions are type-checked when a rule is read (Check) and when a set
// is compiled (Compile), their evaluation is bounded in cost, and a
// condition that fails at run time decides deny (fail closed). The escalation
// rate of each source is kept by a Rates tracker of bounded memory, which
// outlives the engines compiled over it.
package decide
