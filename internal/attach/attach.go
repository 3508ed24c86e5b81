// Package attach connects a workload's network namespace to the host by a
// routed veth pair, the way Calico does: the workload gets its addresses
// as /32 (IPv4) and /128 (IPv6) and a default route through a link-local
// gateway that the host side answers by proxy ARP (IPv4) or as its own
// link-local address (IPv6); the host gets one route per workload address
// pointing at the host-side veth. There is no bridge, so every packet
// between two workloads crosses the host's forward path, where Bulkhead's
// nftables table judges it, and a workload's only way out is its own
// veth, which is what anti-spoofing keys on. docs/architecture.md says why
// routed and not bridged.
//
// Functions run in the calling thread's network namespace as the host's;
// wrap them in netns.Do to act on another one.
package attach

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// Gateway4 is the IPv4 next hop every workload routes through; the host
// side answers ARP for it (proxy ARP), so it needs no address anywhere.
var Gateway4 = netip.MustParseAddr("169.254.1.1")

// HostMAC is the MAC of every host-side veth; Gateway6 is the IPv6
// link-local address the kernel derives from it.
var (
	HostMAC  = net.HardwareAddr{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}
	Gateway6 = netip.MustParseAddr("fe80::ecee:eeff:feee:eeee")
)

// ErrRouteExists is returned (errors.Is) by Add when the host already
// routes one of the addresses: another workload's, or a route someone
// else made. Add never replaces a route it did not make.
var ErrRouteExists = errors.New("the host already routes this address")

// Spec describes one attachment.
type Spec struct {
	// HostIf is the host-side interface name; HostIfName derives one
	// from a stable id so that teardown needs no saved state.
	HostIf string
	// NetNS is the workload's namespace path (a CNI_NETNS).
	NetNS string
	// IfName is the interface name inside the workload ("eth0").
	IfName string
	Addrs  []netip.Addr
	MTU    int // 0: 1500
}

// Result describes what Add created.
type Result struct {
	HostIf, IfName string
	HostMAC        net.HardwareAddr
	MAC            net.HardwareAddr // the workload side's
}

// HostIfName derives the host-side interface name from a stable id (such
// as a container id and interface name): "bh" and 12 hex digits.
func HostIfName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "bh" + hex.EncodeToString(sum[:6])
}

// Add creates the veth pair, addresses and routes. On error, it removes
// what it created.
func Add(s Spec) (Result, error) {
	if err := s.validate(); err != nil {
		return Result{}, err
	}
	mtu := s.MTU
	if mtu == 0 {
		mtu = 1500
	}
	wns, _, err := netns.OpenNet(s.NetNS)
	if err != nil {
		return Result{}, fmt.Errorf("attach: %w", err)
	}
	defer wns.Close()
	if _, err := netlink.LinkByName(s.HostIf); err == nil {
		return Result{}, fmt.Errorf("attach: interface %s already exists", s.HostIf)
	}
	tmp := "bt" + s.HostIf[2:]
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: s.HostIf, MTU: mtu, HardwareAddr: HostMAC},
		PeerName:      tmp,
		PeerNamespace: netlink.NsFd(int(wns)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return Result{}, fmt.Errorf("attach: add veth %s: %w", s.HostIf, err)
	}
	res, err := s.configure(wns, tmp)
	if err != nil {
		_ = Del(s.HostIf)
		return Result{}, err
	}
	return res, nil
}

func (s Spec) validate() error {
	switch {
	case len(s.HostIf) < 3 || len(s.HostIf) > 15:
		return fmt.Errorf("attach: host interface name %q: want 3 to 15 characters", s.HostIf)
	case s.NetNS == "":
		return errors.New("attach: no workload namespace given")
	case s.IfName == "" || len(s.IfName) > 15:
		return fmt.Errorf("attach: interface name %q: want 1 to 15 characters", s.IfName)
	case len(s.Addrs) == 0:
		return errors.New("attach: a workload needs at least one address")
	}
	for _, a := range s.Addrs {
		if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() {
			return fmt.Errorf("attach: address %v: want a unicast address that is not loopback or link-local", a)
		}
	}
	return nil
}

func (s Spec) configure(wns vnetns.NsHandle, tmp string) (Result, error) {
	host, err := netlink.LinkByName(s.HostIf)
	if err != nil {
		return Result{}, fmt.Errorf("attach: find %s: %w", s.HostIf, err)
	}
	name := host.Attrs().Name
	has6 := false
	for _, a := range s.Addrs {
		has6 = has6 || a.Is6()
	}
	for _, kv := range [][2]string{
		{"net/ipv4/conf/" + name + "/proxy_arp", "1"},
		{"net/ipv4/conf/" + name + "/rp_filter", "0"},
		{"net/ipv4/ip_forward", "1"},
	} {
		if err := netns.Sysctl(kv[0], kv[1]); err != nil {
			return Result{}, fmt.Errorf("attach: %w", err)
		}
	}
	if has6 {
		for _, kv := range [][2]string{
			{"net/ipv6/conf/" + name + "/accept_dad", "0"},
			{"net/ipv6/conf/all/forwarding", "1"},
		} {
			if err := netns.Sysctl(kv[0], kv[1]); err != nil {
				return Result{}, fmt.Errorf("attach: %w", err)
			}
		}
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return Result{}, fmt.Errorf("attach: set %s up: %w", name, err)
	}
	// A namespace whose loopback was never up has no local routing table,
	// and then the kernel types every neighbour as broadcast: the host
	// would send workloads frames to ff:ff:ff:ff:ff:ff, which TCP drops.
	// Every real host has lo up; a namespace made with `ip netns add` not.
	if lo, err := netlink.LinkByName("lo"); err == nil && lo.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(lo); err != nil {
			return Result{}, fmt.Errorf("attach: set lo up: %w", err)
		}
	}
	// Inside the workload, through a handle: no thread switching.
	h, err := netlink.NewHandleAt(wns, unix.NETLINK_ROUTE)
	if err != nil {
		return Result{}, fmt.Errorf("attach: open netlink in %s: %w", s.NetNS, err)
	}
	defer h.Close()
	peer, err := h.LinkByName(tmp)
	if err != nil {
		return Result{}, fmt.Errorf("attach: find %s in the workload: %w", tmp, err)
	}
	if err := h.LinkSetName(peer, s.IfName); err != nil {
		return Result{}, fmt.Errorf("attach: rename %s to %s in the workload: %w", tmp, s.IfName, err)
	}
	if err := h.LinkSetUp(peer); err != nil {
		return Result{}, fmt.Errorf("attach: set %s up in the workload: %w", s.IfName, err)
	}
	idx := peer.Attrs().Index
	for _, a := range s.Addrs {
		bits := a.BitLen()
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
		if a.Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(peer, addr); err != nil {
			return Result{}, fmt.Errorf("attach: add %v to %s in the workload: %w", a, s.IfName, err)
		}
		// The host's route to the workload address. Added, never
		// replaced: a route that exists is another workload's (or an
		// operator's), and taking it over would cut that one off.
		r := &netlink.Route{LinkIndex: host.Attrs().Index, Scope: netlink.SCOPE_LINK,
			Dst: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
		if err := netlink.RouteAdd(r); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return Result{}, fmt.Errorf("attach: route %v via %s: %w (%s)", a, name, ErrRouteExists, routeOwner(a))
			}
			return Result{}, fmt.Errorf("attach: route %v via %s: %w", a, name, err)
		}
	}
	if err := s.routeWorkload(h, idx, has6); err != nil {
		return Result{}, err
	}
	return Result{HostIf: name, IfName: s.IfName, HostMAC: host.Attrs().HardwareAddr, MAC: peer.Attrs().HardwareAddr}, nil
}

// routeWorkload gives the workload side (link idx, through h) its
// gateway neighbours and its routes through them.
func (s Spec) routeWorkload(h *netlink.Handle, idx int, has6 bool) error {
	routes := []*netlink.Route{}
	for _, fam := range []struct {
		gw   netip.Addr
		used bool
	}{{Gateway4, !allV6(s.Addrs)}, {Gateway6, has6}} {
		if !fam.used {
			continue
		}
		bits := fam.gw.BitLen()
		if fam.gw.Is4() {
			routes = append(routes, &netlink.Route{LinkIndex: idx, Scope: netlink.SCOPE_LINK,
				Dst: &net.IPNet{IP: fam.gw.AsSlice(), Mask: net.CIDRMask(bits, bits)}})
		}
		routes = append(routes, &netlink.Route{LinkIndex: idx, Gw: fam.gw.AsSlice(),
			Dst: &net.IPNet{IP: make(net.IP, bits/8), Mask: net.CIDRMask(0, bits)}})
	}
	// Permanent neighbours for the gateways: the workload never has to ask,
	// and proxy ARP then needs no host route to the gateway address.
	for _, gw := range []netip.Addr{Gateway4, Gateway6} {
		n := &netlink.Neigh{LinkIndex: idx, State: netlink.NUD_PERMANENT, IP: gw.AsSlice(), HardwareAddr: HostMAC}
		if err := h.NeighSet(n); err != nil {
			return fmt.Errorf("attach: neighbour %v in the workload: %w", gw, err)
		}
	}
	// Added, never replaced, inside the workload too: a default route
	// there belongs to another interface of the container (a second
	// network), which must keep it.
	for _, r := range routes {
		if err := h.RouteAdd(r); err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("attach: route %v in the workload: the workload has one already, through another interface; "+
					"one Bulkhead interface per container: %w", r.Dst, err)
			}
			return fmt.Errorf("attach: route %v in the workload: %w", r.Dst, err)
		}
	}
	return nil
}

// routeOwner names the interface the host routes a through, for errors.
func routeOwner(a netip.Addr) string {
	routes, err := netlink.RouteGet(a.AsSlice())
	if err != nil || len(routes) == 0 {
		return "held elsewhere"
	}
	if l, err := netlink.LinkByIndex(routes[0].LinkIndex); err == nil {
		return "routed to " + l.Attrs().Name
	}
	return fmt.Sprintf("routed to interface %d", routes[0].LinkIndex)
}

func allV6(addrs []netip.Addr) bool {
	for _, a := range addrs {
		if a.Is4() {
			return false
		}
	}
	return true
}

// Del removes the host-side interface, which removes its peer and every
// route through it. A missing interface is not an error.
func Del(hostIf string) error {
	l, err := netlink.LinkByName(hostIf)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("attach: find %s: %w", hostIf, err)
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("attach: delete %s: %w", hostIf, err)
	}
	return nil
}

// Check verifies that the attachment described by s is present: the
// host-side interface is up and routes every address to it, and the
// workload side carries every address.
func Check(s Spec) error {
	host, err := netlink.LinkByName(s.HostIf)
	if err != nil {
		return fmt.Errorf("attach: check: host interface %s: %w", s.HostIf, err)
	}
	if host.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("attach: check: host interface %s is down", s.HostIf)
	}
	wns, _, err := netns.OpenNet(s.NetNS)
	if err != nil {
		return fmt.Errorf("attach: check: %w", err)
	}
	defer wns.Close()
	h, err := netlink.NewHandleAt(wns, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("attach: check: %w", err)
	}
	defer h.Close()
	peer, err := h.LinkByName(s.IfName)
	if err != nil {
		return fmt.Errorf("attach: check: %s in the workload: %w", s.IfName, err)
	}
	have, err := h.AddrList(peer, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("attach: check: addresses of %s: %w", s.IfName, err)
	}
	for _, a := range s.Addrs {
		found := false
		for _, x := range have {
			if ip, ok := netip.AddrFromSlice(x.IP); ok && ip.Unmap() == a {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("attach: check: %s in the workload lacks %v", s.IfName, a)
		}
		routes, err := netlink.RouteGet(a.AsSlice())
		if err != nil || len(routes) == 0 || routes[0].LinkIndex != host.Attrs().Index {
			return fmt.Errorf("attach: check: the host does not route %v to %s", a, s.HostIf)
		}
	}
	return nil
}
