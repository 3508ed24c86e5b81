package feed

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RouteProtocol tags the routes Bulkhead makes to other hosts' workloads
// (the rtnetlink protocol field, "proto 98" in `ip route`), so that a
// restarted agent finds its own without saved state and never touches
// another's.
const RouteProtocol = 98

// Routes keeps a host's routes to the workloads of other hosts: one host
// route (/32, /128) per remote address, via the underlay address of the
// workload's host. The underlay is routed, not an overlay: packets carry
// the workloads' own addresses between hosts, so that each host's
// forward path — where the nftables table judges them — sees who talks
// to whom. docs/up.md says why.
type Routes struct {
	netns string
	log   *slog.Logger
	mu    sync.Mutex
}

// NewRoutes returns the routes of the namespace at netnsPath ("": the
// calling process's).
func NewRoutes(netnsPath string, log *slog.Logger) *Routes {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Routes{netns: netnsPath, log: log.With("component", "routes")}
}

func (r *Routes) handle() (*netlink.Handle, error) {
	if r.netns == "" {
		return netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	ns, err := vnetns.GetFromPath(r.netns)
	if err != nil {
		return nil, fmt.Errorf("feed: routes: open namespace %s: %w", r.netns, err)
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
}

// Sync makes the tagged routes exactly want (workload address → host
// underlay address): it adds and replaces what differs and removes the
// tagged routes no longer wanted. A route that cannot be made (an
// underlay address not reachable on a link) is reported and skipped; the
// others are made.
func (r *Routes) Sync(want map[netip.Addr]netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, err := r.handle()
	if err != nil {
		return err
	}
	defer h.Close()
	have := map[netip.Addr]netip.Addr{}
	var errs []error
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		routes, err := h.RouteListFiltered(fam, &netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("feed: routes: list: %w", err)
		}
		for _, rt := range routes {
			dst, ok := hostRoute(rt)
			via, _ := netip.AddrFromSlice(rt.Gw)
			if ok && want[dst] == via.Unmap() {
				have[dst] = via.Unmap()
				continue
			}
			if err := h.RouteDel(&rt); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("feed: routes: remove %v: %w", rt.Dst, err))
			}
		}
	}
	added := 0
	for dst, via := range want {
		if have[dst] == via {
			continue
		}
		if dst.Is4() != via.Is4() {
			errs = append(errs, fmt.Errorf("feed: routes: %v via %v: the underlay address must be of the same family", dst, via))
			continue
		}
		bits := dst.BitLen()
		rt := &netlink.Route{Dst: &net.IPNet{IP: dst.AsSlice(), Mask: net.CIDRMask(bits, bits)}, Gw: via.AsSlice(),
			Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
		if err := h.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("feed: routes: %v via %v: %w", dst, via, err))
			continue
		}
		added++
	}
	if added > 0 || len(errs) > 0 {
		r.log.Debug("routes synced", "routes", len(want), "added", added, "errors", len(errs))
	}
	return errors.Join(errs...)
}

func hostRoute(rt netlink.Route) (netip.Addr, bool) {
	if rt.Dst == nil {
		return netip.Addr{}, false
	}
	ones, bits := rt.Dst.Mask.Size()
	a, ok := netip.AddrFromSlice(rt.Dst.IP)
	return a.Unmap(), ok && ones == bits
}

// syncRoutes routes to the remote workloads the agent holds.
func (f *Follower) syncRoutes() {
	if f.opts.Routes == nil {
		return
	}
	want := map[netip.Addr]netip.Addr{}
	for _, w := range f.remote {
		if !w.hostIP.IsValid() || w.hostIP == f.opts.HostIP {
			continue
		}
		for _, a := range w.ips {
			if a.Is4() == w.hostIP.Is4() {
				want[a] = w.hostIP
			}
		}
	}
	if err := f.opts.Routes.Sync(want); err != nil {
		f.log.Warn("routes to other hosts' workloads", "err", err)
	}
}
