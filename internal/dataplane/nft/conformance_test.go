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
// the reason (name → bug); BULKHEAD_STRICT=1 runs them anyway. Empty:
// NoWindowDuringUpdates was one until the nftables dataplane learned to
// prepare interval-map elements in a transaction of their own.
var knownFailures = map[string]string{}

// Random worlds through the kernel and through the reference evaluator
// (8 worlds × 25 probes; 40 × 60 with BULKHEAD_LONG=1; BULKHEAD_SEED=n
// replays).
func TestDifferential(t *testing.T) {
	dptest.Differential(t, kernel(t), dptest.DefaultDiffConfig())
}
