package nft

import "github.com/bulkhead-dev/bulkhead/internal/netns"

// NetNS identifies the network namespace this dataplane enforces in: the
// one Options.NetNS named, or the process's own. The agent compares it
// with the namespace its callers attach workloads in, so that it never
// reports enforced a workload whose traffic never meets this table.
func (d *Dataplane) NetNS() (netns.ID, error) {
	if d.nsFd >= 0 {
		return netns.IDOfFD(d.nsFd)
	}
	return netns.Self()
}
