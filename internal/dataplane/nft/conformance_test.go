package nft_test

import (
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/dptest"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
)

// kernel is the conformance suite's kernel harness around this package.
func kernel(t *testing.T) *dptest.KernelHarness {
	return dptest.Kernel(t, func(hostNS string) (dataplane.Dataplane, error) {
		return nft.New(nft.Options{NetNS: hostNS})
	})
}

// The conformance suite, in throwaway namespaces on the real kernel.
func TestConformance(t *testing.T) {
	dptest.RunKnown(t, kernel(t), knownFailures)
}

// knownFailures are conformance cases this dataplane fails today, with
// the reason; BULKHEAD_STRICT=1 runs them anyway.
var knownFailures = map[string]string{
	// In about 4 runs in 10, one SYN of ~300 is judged by the baseline
	// deny-all while an Apply changes the deciding group: Linux 6.18 does
	// not show a hash map and a concatenated interval (pipapo) map changed
	// in one transaction to the packet path at once. Fix: make before
	// break (add new keys; switch references; delete old keys: three
	// transactions) and never rewrite a pipapo element in place.
	"NoWindowDuringUpdates": "a SYN can miss the verdict maps during an Apply (issue 3; see the comment above)",
}

// Random worlds through the kernel and through the reference evaluator
// (8 worlds × 25 probes; 40 × 60 with BULKHEAD_LONG=1; BULKHEAD_SEED=n
// replays).
func TestDifferential(t *testing.T) {
	dptest.Differential(t, kernel(t), dptest.DefaultDiffConfig())
}
