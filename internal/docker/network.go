package docker

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

func (d *Driver) createNetwork(body []byte) (any, error) {
	const call = "NetworkDriver.CreateNetwork"
	var req createNetworkRequest
	if err := decode(call, body, &req); err != nil {
		return nil, err
	}
	if err := checkID(call, "NetworkID", req.NetworkID); err != nil {
		return nil, err
	}
	if len(req.IPv6Data) > 0 {
		return nil, fault.New(fault.Invalid, nil, "%s: IPv6 pools: not supported by the Docker driver yet; create the network without --ipv6", call)
	}
	if len(req.IPv4Data) != 1 {
		return nil, fault.New(fault.Invalid, nil, "%s: %d IPv4 pools: want exactly one (--subnet)", call, len(req.IPv4Data))
	}
	pool, err := netip.ParsePrefix(req.IPv4Data[0].Pool)
	if err != nil {
		return nil, fault.New(fault.Invalid, nil, "%s: IPv4Data[0].Pool %q: %v", call, req.IPv4Data[0].Pool, err)
	}
	ns, err := namespaceOf(call, req.Options)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if n, ok := d.state.Networks[req.NetworkID]; ok {
		if n.Prefix == pool.Masked() && n.Namespace == ns {
			return struct{}{}, nil // Docker retried
		}
		return nil, fault.New(fault.Conflict, nil, "%s: network %s exists already with subnet %v", call, req.NetworkID, n.Prefix)
	}
	if _, ok := d.state.Pools[poolID(pool.Masked())]; !ok {
		return nil, fault.New(fault.Invalid, nil, "%s: subnet %v was not requested from Bulkhead's IPAM: create the network with --ipam-driver bulkhead", call, pool)
	}
	next := d.state.clone()
	next.Networks[req.NetworkID] = &Network{ID: req.NetworkID, Prefix: pool.Masked(), Namespace: ns}
	if err := d.commit(call, next); err != nil {
		return nil, err
	}
	d.log.Info("network created", "network", req.NetworkID, "subnet", pool, "namespace", ns)
	return struct{}{}, nil
}

func (d *Driver) deleteNetwork(body []byte) (any, error) {
	const call = "NetworkDriver.DeleteNetwork"
	var req deleteNetworkRequest
	if err := decode(call, body, &req); err != nil {
		return nil, err
	}
	if err := checkID(call, "NetworkID", req.NetworkID); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.state.Networks[req.NetworkID]; !ok {
		return nil, fault.New(fault.NotFound, nil, "%s: network %s is not a Bulkhead network this agent knows", call, req.NetworkID)
	}
	for _, ep := range d.state.Endpoints {
		if ep.NetworkID == req.NetworkID {
			return nil, fault.New(fault.Conflict, nil, "%s: network %s still has endpoint %s; remove its containers first", call, req.NetworkID, ep.ID)
		}
	}
	next := d.state.clone()
	delete(next.Networks, req.NetworkID)
	if err := d.commit(call, next); err != nil {
		return nil, err
	}
	d.log.Info("network deleted", "network", req.NetworkID)
	return struct{}{}, nil
}

func (d *Driver) createEndpoint(body []byte) (any, error) {
	const call = "NetworkDriver.CreateEndpoint"
	var req createEndpointRequest
	if err := decode(call, body, &req); err != nil {
		return nil, err
	}
	if err := checkID(call, "NetworkID", req.NetworkID); err != nil {
		return nil, err
	}
	if err := checkID(call, "EndpointID", req.EndpointID); err != nil {
		return nil, err
	}
	if req.Interface == nil || req.Interface.Address == "" {
		return nil, fault.New(fault.Invalid, nil, "%s: no Interface.Address: the network's IPAM driver must be bulkhead", call)
	}
	if req.Interface.AddressIPv6 != "" {
		return nil, fault.New(fault.Invalid, nil, "%s: Interface.AddressIPv6: IPv6 is not supported by the Docker driver yet", call)
	}
	p, err := netip.ParsePrefix(req.Interface.Address)
	if err != nil {
		return nil, fault.New(fault.Invalid, nil, "%s: Interface.Address %q: %v", call, req.Interface.Address, err)
	}
	ns, err := namespaceOf(call, map[string]any{genericOpts: req.Options[genericOpts]})
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.state.Networks[req.NetworkID]
	if !ok {
		return nil, fault.New(fault.NotFound, nil, "%s: network %s is not a Bulkhead network this agent knows", call, req.NetworkID)
	}
	if !n.Prefix.Contains(p.Addr()) {
		return nil, fault.New(fault.Invalid, nil, "%s: address %v is outside network %s's subnet %v", call, p.Addr(), req.NetworkID, n.Prefix)
	}
	if ep, ok := d.state.Endpoints[req.EndpointID]; ok {
		return nil, fault.New(fault.Conflict, nil, "%s: endpoint %s exists already (address %v)", call, req.EndpointID, ep.Addr)
	}
	for _, ep := range d.state.Endpoints {
		if ep.Addr == p.Addr() {
			return nil, fault.New(fault.Conflict, nil, "%s: address %v is endpoint %s's", call, p.Addr(), ep.ID)
		}
	}
	if ns == "" {
		ns = n.Namespace
	}
	next := d.state.clone()
	next.Endpoints[req.EndpointID] = &Endpoint{ID: req.EndpointID, NetworkID: req.NetworkID, Addr: p.Addr(),
		HostIf: attach.HostIfName(req.EndpointID), Namespace: ns}
	if err := d.commit(call, next); err != nil {
		return nil, err
	}
	return createEndpointResponse{}, nil
}

func (d *Driver) deleteEndpoint(body []byte) (any, error) {
	const call = "NetworkDriver.DeleteEndpoint"
	var req endpointRequest
	if err := decode(call, body, &req); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ep, err := d.endpoint(call, req.NetworkID, req.EndpointID)
	if err != nil {
		return nil, err
	}
	if err := d.cfg.Links.Delete(ep.HostIf); err != nil {
		return nil, fault.New(fault.Unavailable, nil, "%s: remove interface %s: %v", call, ep.HostIf, err)
	}
	d.unregister(*ep)
	next := d.state.clone()
	delete(next.Endpoints, ep.ID)
	if err := d.commit(call, next); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (d *Driver) join(body []byte) (any, error) {
	const call = "NetworkDriver.Join"
	var req joinRequest
	if err := decode(call, body, &req); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ep, err := d.endpoint(call, req.NetworkID, req.EndpointID)
	if err != nil {
		return nil, err
	}
	if ep.Joined {
		return nil, fault.New(fault.Conflict, nil, "%s: endpoint %s has joined already (interface %s); one sandbox per endpoint", call, ep.ID, ep.HostIf)
	}
	peer := peerOf(ep.HostIf)
	if err := d.cfg.Links.Create(ep.HostIf, peer, ep.Addr); err != nil {
		return nil, fault.New(fault.Unavailable, nil, "%s: attach endpoint %s: %v", call, ep.ID, err)
	}
	next := d.state.clone()
	next.Endpoints[ep.ID].Joined = true
	if err := d.commit(call, next); err != nil {
		_ = d.cfg.Links.Delete(ep.HostIf)
		return nil, err
	}
	d.identify(*next.Endpoints[ep.ID])
	return joinResponse{
		InterfaceName: interfaceName{SrcName: peer, DstPrefix: "eth"},
		Gateway:       Gateway.String(),
		StaticRoutes:  []staticRoute{{Destination: Gateway.String() + "/32", RouteType: 1}},
	}, nil
}

func (d *Driver) leave(body []byte) (any, error) {
	const call = "NetworkDriver.Leave"
	var req endpointRequest
	if err := decode(call, body, &req); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ep, err := d.endpoint(call, req.NetworkID, req.EndpointID)
	if err != nil {
		return nil, err
	}
	if !ep.Joined {
		return nil, fault.New(fault.Conflict, nil, "%s: endpoint %s has not joined", call, ep.ID)
	}
	if err := d.cfg.Links.Delete(ep.HostIf); err != nil {
		return nil, fault.New(fault.Unavailable, nil, "%s: remove interface %s: %v", call, ep.HostIf, err)
	}
	d.unregister(*ep)
	next := d.state.clone()
	next.Endpoints[ep.ID].Joined = false
	if err := d.commit(call, next); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (d *Driver) unregister(ep Endpoint) {
	if d.cfg.Registrar == nil {
		return
	}
	if err := d.cfg.Registrar.Unregister(context.Background(), ep); err != nil {
		d.log.Warn("unregister endpoint", "endpoint", ep.ID, "err", err)
	}
}

// identify asks the Resolver, in the background and bounded in time,
// who is behind ep, and registers it. Until it succeeds, ep's address
// belongs to no workload and the dataplane drops its packets.
func (d *Driver) identify(ep Endpoint) {
	if d.cfg.Resolver == nil || d.cfg.Registrar == nil {
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		ctx, cancel := context.WithTimeout(d.ctx, d.cfg.ResolveTimeout)
		defer cancel()
		delay := 2 * time.Millisecond
		for {
			id, err := d.cfg.Resolver.Resolve(ctx, ep.NetworkID, ep.ID)
			if err == nil {
				if err = d.registerIfJoined(ctx, ep, id); err == nil {
					d.log.Info("endpoint identified", "endpoint", ep.ID, "container", id.ContainerID, "name", id.Name)
					return
				}
			}
			select {
			case <-ctx.Done():
				d.log.Warn("endpoint not identified; its packets stay dropped", "endpoint", ep.ID, "err", fmt.Errorf("%w (last: %v)", ctx.Err(), err))
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, 500*time.Millisecond)
		}
	}()
}

// registerIfJoined registers ep unless it left meanwhile: a late answer
// must not register a container that is gone.
func (d *Driver) registerIfJoined(ctx context.Context, ep Endpoint, id Identity) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur, ok := d.state.Endpoints[ep.ID]
	if !ok || !cur.Joined {
		return nil
	}
	return d.cfg.Registrar.Register(ctx, *cur, id)
}
