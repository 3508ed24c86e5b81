package policy

// Engine answers policy questions about one Set. Build it with NewEngine;
// it is safe for concurrent use once built. (Being implemented in eval.go.)
//
//	func NewEngine(s *Set) (*Engine, error)       // validates references, indexes
//	func (e *Engine) Evaluate(p Probe) Verdict     // the reference evaluator
//	func (e *Engine) Side(d Direction, w *Workload, peer Endpoint, proto Protocol, port int) Side
//	func (e *Engine) Endpoint(ref string) (Endpoint, error) // "ns/name" or an IP address
