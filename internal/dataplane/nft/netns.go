package nft

import (
	"errors"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

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

// HasInterface reports whether the namespace this dataplane enforces in
// has an interface named name: the agent asks it of a registration's
// host interface to tell an attachment that is gone (its workload's
// namespace was removed without a CNI DEL) from one that is live.
func (d *Dataplane) HasInterface(name string) (bool, error) {
	var (
		h   *netlink.Handle
		err error
	)
	if d.nsFd >= 0 {
		h, err = netlink.NewHandleAt(vnetns.NsHandle(d.nsFd), unix.NETLINK_ROUTE)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if err != nil {
		return false, errorf("open netlink to look for interface %s: %w", name, err)
	}
	defer h.Close()
	if _, err := h.LinkByName(name); err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return false, nil
		}
		return false, errorf("look for interface %s: %w", name, err)
	}
	return true, nil
}
