package docker

import (
	"net/netip"
	"slices"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// maxPoolBits bounds a pool: /16 at the largest, so that an allocation
// scan is bounded.
const minPoolBits = 16

func poolID(p netip.Prefix) string { return addressSpace + "/" + p.String() }

func (d *Driver) ipamCapabilities([]byte) (any, error) {
	return ipamCapabilitiesResponse{}, nil
}

func (d *Driver) addressSpaces([]byte) (any, error) {
	return addressSpacesResponse{LocalDefaultAddressSpace: addressSpace, GlobalDefaultAddressSpace: addressSpace}, nil
}

func (d *Driver) requestPool(body []byte) (any, error) {
	const call = "IpamDriver.RequestPool"
	var req requestPoolRequest
	if err := decode(call, body, &req); err != nil {
		return nil, err
	}
	switch {
	case req.V6:
		return nil, fault.New(fault.Invalid, nil, "%s: IPv6 pools are not supported by the Docker driver yet", call)
	case req.Pool == "":
		return nil, fault.New(fault.Invalid, nil, "%s: no pool: give the network a subnet (--subnet 10.x.0.0/24)", call)
	case req.SubPool != "":
		return nil, fault.New(fault.Invalid, nil, "%s: SubPool (--ip-range) is not supported; the whole subnet is the pool", call)
	}
	p, err := netip.ParsePrefix(req.Pool)
	if err != nil || !p.Addr().Is4() {
		return nil, fault.New(fault.Invalid, nil, "%s: pool %q: want an IPv4 prefix such as 10.42.0.0/24", call, req.Pool)
	}
	if p.Bits() < minPoolBits || p.Bits() > 30 {
		return nil, fault.New(fault.Invalid, nil, "%s: pool %v: want a prefix length from /%d to /30", call, p, minPoolBits)
	}
	p = p.Masked()
	id := poolID(p)
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.state.Pools[id]; ok {
		return nil, fault.New(fault.Conflict, nil, "%s: pool %v is in use by another network", call, p)
	}
	for _, o := range d.state.Pools {
		if o.Prefix.Overlaps(p) {
			return nil, fault.New(fault.Conflict, nil, "%s: pool %v overlaps pool %v", call, p, o.Prefix)
		}
	}
	next := d.state.clone()
	next.Pools[id] = &Pool{Prefix: p}
	if err := d.commit(call, next); err != nil {
		return nil, err
	}
	return requestPoolResponse{PoolID: id, Pool: p.String(), Data: map[string]string{}}, nil
}

func (d *Driver) releasePool(body []byte) (any, error) {
	const call = "IpamDriver.ReleasePool"
	var req releasePoolRequest
	if err := decode(call, body, &req); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	pool, ok := d.state.Pools[req.PoolID]
	if !ok {
		return nil, fault.New(fault.NotFound, nil, "%s: pool %q: no such pool", call, req.PoolID)
	}
	for _, n := range d.state.Networks {
		if n.Prefix == pool.Prefix {
			return nil, fault.New(fault.Conflict, nil, "%s: pool %v is network %s's", call, pool.Prefix, n.ID)
		}
	}
	next := d.state.clone()
	delete(next.Pools, req.PoolID)
	if err := d.commit(call, next); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (d *Driver) requestAddress(body []byte) (any, error) {
	const call = "IpamDriver.RequestAddress"
	var req requestAddressRequest
	if err := decode(call, body, &req); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	pool, ok := d.state.Pools[req.PoolID]
	if !ok {
		return nil, fault.New(fault.NotFound, nil, "%s: pool %q: no such pool", call, req.PoolID)
	}
	first, last := usable(pool.Prefix)
	var addr netip.Addr
	if req.Address != "" {
		a, err := netip.ParseAddr(req.Address)
		if err != nil {
			return nil, fault.New(fault.Invalid, nil, "%s: address %q: %v", call, req.Address, err)
		}
		if !pool.Prefix.Contains(a) || a.Less(first) || last.Less(a) {
			return nil, fault.New(fault.Invalid, nil, "%s: address %v is outside pool %v (usable %v to %v)", call, a, pool.Prefix, first, last)
		}
		if slices.Contains(pool.Allocated, a) {
			return nil, fault.New(fault.Conflict, nil, "%s: address %v is in use", call, a)
		}
		addr = a
	} else {
		for a := first; !last.Less(a); a = a.Next() {
			if !slices.Contains(pool.Allocated, a) {
				addr = a
				break
			}
		}
		if !addr.IsValid() {
			return nil, fault.New(fault.Conflict, nil, "%s: pool %v is full", call, pool.Prefix)
		}
	}
	next := d.state.clone()
	np := next.Pools[req.PoolID]
	np.Allocated = append(np.Allocated, addr)
	if err := d.commit(call, next); err != nil {
		return nil, err
	}
	return requestAddressResponse{Address: netip.PrefixFrom(addr, pool.Prefix.Bits()).String(), Data: map[string]string{}}, nil
}

func (d *Driver) releaseAddress(body []byte) (any, error) {
	const call = "IpamDriver.ReleaseAddress"
	var req releaseAddressRequest
	if err := decode(call, body, &req); err != nil {
		return nil, err
	}
	a, err := netip.ParseAddr(req.Address)
	if err != nil {
		return nil, fault.New(fault.Invalid, nil, "%s: address %q: %v", call, req.Address, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	pool, ok := d.state.Pools[req.PoolID]
	if !ok {
		return nil, fault.New(fault.NotFound, nil, "%s: pool %q: no such pool", call, req.PoolID)
	}
	i := slices.Index(pool.Allocated, a)
	if i < 0 {
		return nil, fault.New(fault.NotFound, nil, "%s: address %v is not allocated in pool %v", call, a, pool.Prefix)
	}
	next := d.state.clone()
	np := next.Pools[req.PoolID]
	np.Allocated = slices.Delete(np.Allocated, i, i+1)
	if err := d.commit(call, next); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// usable is a pool's first and last host address (neither the network
// nor the broadcast address).
func usable(p netip.Prefix) (netip.Addr, netip.Addr) {
	first := p.Addr().Next()
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= host
	v--
	last := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	return first, last
}
