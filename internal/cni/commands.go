package cni

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/bulkhead-dev/bulkhead/internal/attach"
)

// check verifies the attachment: its allocation, prevResult's addresses,
// the veth, addresses and routes (attach.Check), and the agent's
// registration.
func (p *plugin) check(args *skel.CmdArgs) error {
	at, err := p.setup(args)
	if err != nil {
		return err
	}
	if err := checkNetNS(args.Netns); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.agentTimeout)
	defer cancel()
	status, err := at.agent.Status(ctx)
	if err != nil {
		return agentError(at.agent.Socket(), "ask the agent's status", err)
	}
	if msg := netnsProblem(at.agent.Socket(), status); msg != "" {
		return cniError(CodeCheckFailed, "%s", msg)
	}
	st, err := at.store.Read()
	if err != nil {
		return err
	}
	a := st.Allocations[at.key]
	switch {
	case a == nil:
		return cniError(CodeCheckFailed, "container %s interface %s has no address on network %q (state %s)", args.ContainerID, args.IfName, at.conf.Name, at.store.Dir)
	case !a.Complete:
		return cniError(CodeCheckFailed, "container %s interface %s: ADD did not complete", args.ContainerID, args.IfName)
	}
	if at.conf.PrevResult != nil {
		if err := checkPrevResult(at.conf, a.IPs); err != nil {
			return err
		}
	}
	if err := attach.Check(attach.Spec{HostIf: at.hostIf, NetNS: args.Netns, IfName: args.IfName, Addrs: a.IPs}); err != nil {
		return wrapError(CodeCheckFailed, err)
	}
	list, err := at.agent.Workloads(ctx)
	if err != nil {
		return agentError(at.agent.Socket(), "list workloads", err)
	}
	for _, r := range list {
		if r.Interface != at.hostIf {
			continue
		}
		var have []netip.Addr
		for _, s := range r.IPs {
			if ip, err := netip.ParseAddr(s); err == nil {
				have = append(have, ip)
			}
		}
		if !sameAddrs(have, a.IPs) {
			return cniError(CodeCheckFailed, "the agent holds workload %s/%s with addresses %v; the attachment has %v", r.Namespace, r.Name, r.IPs, a.IPs)
		}
		return nil
	}
	return cniError(CodeCheckFailed, "the agent at %s has no workload on interface %s (want %s/%s with %v)",
		at.agent.Socket(), at.hostIf, a.Namespace, a.Name, a.IPs)
}

func checkPrevResult(conf *Config, want []netip.Addr) error {
	pc := &types.PluginConf{CNIVersion: conf.CNIVersion, RawPrevResult: conf.PrevResult}
	if err := version.ParsePrevResult(pc); err != nil {
		return cniError(CodeInvalidConfig, "prevResult: %v", err)
	}
	prev, err := types100.NewResultFromResult(pc.PrevResult)
	if err != nil {
		return cniError(CodeInvalidConfig, "prevResult: %v", err)
	}
	var have []netip.Addr
	for _, ipc := range prev.IPs {
		if ip, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			have = append(have, ip.Unmap())
		}
	}
	if !sameAddrs(have, want) {
		return cniError(CodeCheckFailed, "prevResult has addresses %v; the attachment has %v", have, want)
	}
	return nil
}

// status answers whether ADD can succeed now: the agent answers, enforces
// in the plugin's network namespace, and every subnet has an address
// left (else code 50).
func (p *plugin) status(args *skel.CmdArgs) error {
	at, err := p.setup(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.agentTimeout)
	defer cancel()
	status, err := at.agent.Status(ctx)
	if err != nil {
		return cniError(CodeNotAvailable, "the agent at %s does not answer its health check (GET /v1/status): %v", at.agent.Socket(), err)
	}
	if msg := netnsProblem(at.agent.Socket(), status); msg != "" {
		return cniError(CodeNotAvailable, "%s", msg)
	}
	st, err := at.store.Read()
	if err != nil {
		return cniError(CodeNotAvailable, "IPAM state: %v", err)
	}
	for _, sub := range at.conf.Subnets() {
		if st.Free(sub) == 0 {
			return cniError(CodeNotAvailable, "subnet %v has no address left (%d in use, %d of them held for pending unregistrations); "+
				"DEL unused containers or widen the subnet", sub, capacity(sub), len(st.Pending))
		}
	}
	return nil
}

// gc removes every attachment of this network that is not in
// cni.dev/valid-attachments: its veth (if present), its registration and
// its allocation. Other networks' attachments are not this network's
// state and are left alone.
func (p *plugin) gc(args *skel.CmdArgs) error {
	at, err := p.setup(args)
	if err != nil {
		return err
	}
	valid, containers := map[string]bool{}, map[string]bool{}
	for _, v := range at.conf.ValidAttachments {
		valid[allocKey(v.ContainerID, v.IfName)] = true
		containers[v.ContainerID] = true
	}
	if err := at.store.ForgetNamespaces(containers); err != nil {
		return err
	}
	st, err := at.store.Read()
	if err != nil {
		return err
	}
	var stale []*Allocation
	for key, a := range st.Allocations {
		if !valid[key] && (a.Complete || time.Since(a.Created) > gcGrace) {
			stale = append(stale, a)
		}
	}
	slices.SortFunc(stale, func(x, y *Allocation) int { return strings.Compare(x.Key(), y.Key()) })
	var errs []error
	hostIfs := map[string]bool{}
	for _, a := range stale {
		hostIfs[a.HostIf] = true
		if err := attach.Del(a.HostIf); err != nil {
			errs = append(errs, wrapError(CodeInterface, err))
		}
	}
	if len(stale) > 0 {
		ctx, cancel := context.WithTimeout(p.ctx, p.agentTimeout)
		uerr := unregisterOwned(ctx, at.agent, hostIfs)
		cancel()
		for _, a := range stale {
			if uerr != nil {
				errs = append(errs, at.store.MarkPending(a.ContainerID, a.IfName, a.HostIf))
			} else {
				_, err := at.store.Release(a.Key())
				errs = append(errs, err)
			}
		}
		p.log.Info("gc: removed stale attachments", "count", len(stale), "agentReached", uerr == nil)
	}
	p.flushPending(at.store, at.agent)
	return firstError(errs)
}

// buildResult describes the attachment as a 1.1.0 result: the host-side
// and the workload-side interface, each address as /32 or /128 on the
// workload side with the link-local gateway, and the default routes
// through it.
func buildResult(a *Allocation, args *skel.CmdArgs, res attach.Result, dns types.DNS) *types100.Result {
	r := &types100.Result{
		CNIVersion: types100.ImplementedSpecVersion,
		Interfaces: []*types100.Interface{
			{Name: res.HostIf, Mac: res.HostMAC.String()},
			{Name: args.IfName, Mac: res.MAC.String(), Sandbox: args.Netns},
		},
		DNS: dns,
	}
	has := map[bool]bool{}
	for _, ip := range a.IPs {
		bits := ip.BitLen()
		gw := attach.Gateway6
		if ip.Is4() {
			gw = attach.Gateway4
		}
		r.IPs = append(r.IPs, &types100.IPConfig{
			Interface: types100.Int(1),
			Address:   net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, bits)},
			Gateway:   gw.AsSlice(),
		})
		has[ip.Is4()] = true
	}
	if has[true] {
		r.Routes = append(r.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: attach.Gateway4.AsSlice()})
	}
	if has[false] {
		r.Routes = append(r.Routes, &types.Route{Dst: net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}, GW: attach.Gateway6.AsSlice()})
	}
	return r
}
