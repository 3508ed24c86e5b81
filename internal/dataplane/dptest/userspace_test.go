package dptest

import "testing"

// The differential test against the userspace dataplane: both sides use
// the reference evaluator, so this checks the generator and the harness
// (every generated world must load, compile and apply).
func TestDifferentialUserspace(t *testing.T) {
	cfg := DefaultDiffConfig()
	cfg.Worlds *= 4
	Differential(t, Userspace(), cfg)
}
