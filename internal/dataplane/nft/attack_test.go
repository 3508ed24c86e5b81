package nft_test

import (
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane/dptest"
)

// A workload with root and CAP_NET_ADMIN in its own namespace flushes its
// rules, spoofs other workloads' addresses, floods new connections and
// scans every other workload: nothing the policy denies gets through,
// and the others are unaffected (dptest.Attacks has the details).
func TestAttacks(t *testing.T) {
	dptest.Attacks(t, kernel(t))
}
