package cni

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
)

// sweepGone removes this network's attachments whose host interface is
// gone from the namespace the plugin attaches in: their container's
// network namespace was removed without a DEL (`ctr run -d --cni` never
// calls one; a killed runtime cannot), which took the veth and its routes
// with it. Their registrations would otherwise stay at the agent, and
// their addresses allocated, until a GC that such runtimes never call; and
// the container, started again under its id, could not be attached (the
// (container, interface) would be attached already). Only complete
// attachments count: an incomplete one may be an ADD in flight, whose
// veth is not made yet. A registration is removed only when it is on
// the dead interface with the dead attachment's addresses, and the
// allocation only when it is still the one found dead, so a concurrent
// ADD of the same container is left alone. Best-effort: what fails stays
// for the next ADD, DEL or GC.
//
// own sweeps only this ADD's own (container, interface), synchronously
// before it reserves (one interface looked up); otherwise every other
// attachment of the network is checked (one dump of the host's
// interfaces: about 11 ms with 1,000 of them, so ADD runs it beside its
// wait for the agent; docs/benchmarks.md).
func (p *plugin) sweepGone(at *attachment, own bool) {
	st, err := at.store.Read()
	if err != nil {
		return
	}
	var gone []*Allocation
	if own {
		if a := st.Allocations[at.key]; a != nil && a.Complete && linkGone(a.HostIf) {
			gone = append(gone, a)
		}
	} else if len(st.Allocations) > 0 {
		links, err := netlink.LinkList()
		if err != nil {
			p.log.Warn("sweep: list interfaces", "err", err)
			return
		}
		present := map[string]bool{}
		for _, l := range links {
			present[l.Attrs().Name] = true
		}
		for key, a := range st.Allocations {
			if key != at.key && a.Complete && !present[a.HostIf] {
				gone = append(gone, a)
			}
		}
	}
	if len(gone) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.agentTimeout)
	defer cancel()
	list, err := at.agent.Workloads(ctx)
	if err != nil {
		p.log.Warn("sweep: list workloads", "err", err)
		return
	}
	for _, a := range gone {
		if !linkGone(a.HostIf) {
			continue // made again since, or cannot tell
		}
		ok := true
		for _, r := range list {
			if r.Interface == a.HostIf && slices.Equal(r.IPs, addrStrings(a.IPs)) {
				if err := at.agent.UnregisterWorkloadOn(ctx, r.Namespace, r.Name, r.Interface); err != nil {
					p.log.Warn("sweep: unregister", "workload", r.Namespace+"/"+r.Name, "err", err)
					ok = false
				}
			}
		}
		if !ok {
			continue
		}
		if err := at.store.ReleaseIf(a.Key(), a.Created); err != nil {
			p.log.Warn("sweep: release addresses", "attachment", a.Key(), "err", err)
			continue
		}
		p.log.Info("removed an attachment whose interface is gone (its container's namespace was removed without DEL)",
			"attachment", a.Key(), "workload", a.Namespace+"/"+a.Name, "ips", a.IPs, "interface", a.HostIf)
	}
}

// linkGone reports whether the interface is known not to exist.
func linkGone(name string) bool {
	_, err := netlink.LinkByName(name)
	return errors.As(err, new(netlink.LinkNotFoundError))
}

// ReleaseIf is Release of key's allocation only while it is the one
// created at created.
func (s *Store) ReleaseIf(key string, created time.Time) error {
	return s.Update(func(st *State) (bool, error) {
		a := st.Allocations[key]
		if a == nil || !a.Created.Equal(created) {
			return false, nil
		}
		delete(st.Allocations, key)
		return true, nil
	})
}
