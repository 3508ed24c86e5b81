// Package inventory is the workloads the agents report, indexed as the
// manager asks about them: by address (whose is it), by name, by host
// (how many), by underlay address, and as the policy model's workloads
// for proving walls. The manager's copy of feed/workloads/
// (internal/manager/mirror) keeps it current, one change at a time, so
// that no request walks 100,000 workloads.
//
// An Inventory is safe for concurrent use; its zero value is empty and
// ready. The workloads it returns are shared: callers must not change
// them.
package inventory

import (
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Inventory is the reported workloads, indexed.
type Inventory struct {
	mu      sync.RWMutex
	byKey   map[string]*invEntry // store key → entry
	hosts   map[string]int       // host → workloads
	addrs   map[netip.Addr]*api.HostWorkload
	names   map[string]*api.HostWorkload  // namespace/name → workload
	named   map[string]int                // namespace/name → records of it, on every host
	hostIPs map[netip.Addr]map[string]int // underlay address → host → workloads naming it
	gen     uint64                        // moves at every change
	list    []*policy.Workload            // the model's inventory at gen listGen; nil: not built
	listGen uint64
}

type invEntry struct {
	wl      *api.HostWorkload
	pw      *policy.Workload
	sortKey string // host/namespace/name
}

// Reset empties the index: the store is listed again.
func (inv *Inventory) Reset() {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.init()
	inv.gen++
}

func (inv *Inventory) init() {
	inv.byKey, inv.hosts, inv.addrs = map[string]*invEntry{}, map[string]int{}, map[netip.Addr]*api.HostWorkload{}
	inv.names, inv.hostIPs = map[string]*api.HostWorkload{}, map[netip.Addr]map[string]int{}
	inv.named = map[string]int{}
}

// Change applies one change of the workload at store key key (old nil
// for a new key, new nil for a delete).
func (inv *Inventory) Change(key string, oldW, newW *api.HostWorkload) {
	if oldW == nil && newW == nil {
		return
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if inv.byKey == nil {
		inv.init()
	}
	inv.gen++
	if e := inv.byKey[key]; e != nil {
		delete(inv.byKey, key)
		if inv.hosts[e.wl.Host]--; inv.hosts[e.wl.Host] <= 0 {
			delete(inv.hosts, e.wl.Host)
		}
		for _, a := range e.pw.IPs {
			if inv.addrs[a] == e.wl {
				delete(inv.addrs, a)
			}
		}
		k := e.wl.Namespace + "/" + e.wl.Name
		if inv.names[k] == e.wl {
			delete(inv.names, k)
		}
		if inv.named[k]--; inv.named[k] <= 0 {
			delete(inv.named, k)
		}
		if a, err := netip.ParseAddr(e.wl.HostIP); err == nil {
			if hs := inv.hostIPs[a.Unmap()]; hs != nil {
				if hs[e.wl.Host]--; hs[e.wl.Host] <= 0 {
					delete(hs, e.wl.Host)
				}
				if len(hs) == 0 {
					delete(inv.hostIPs, a.Unmap())
				}
			}
		}
	}
	if newW == nil {
		return
	}
	e := &invEntry{wl: newW, pw: Model(newW), sortKey: newW.Host + "/" + newW.Namespace + "/" + newW.Name}
	inv.byKey[key] = e
	inv.hosts[newW.Host]++
	for _, a := range e.pw.IPs {
		inv.addrs[a] = newW
	}
	inv.names[newW.Namespace+"/"+newW.Name] = newW
	inv.named[newW.Namespace+"/"+newW.Name]++
	if a, err := netip.ParseAddr(newW.HostIP); err == nil {
		hs := inv.hostIPs[a.Unmap()]
		if hs == nil {
			hs = map[string]int{}
			inv.hostIPs[a.Unmap()] = hs
		}
		hs[newW.Host]++
	}
}

// Model is a reported workload as the policy model has it, its
// addresses unmapped.
func Model(wl *api.HostWorkload) *policy.Workload {
	pw := &policy.Workload{Namespace: wl.Namespace, Name: wl.Name, Labels: wl.Labels, Host: wl.Host,
		Pos: policy.Pos{File: "workload " + wl.Host + "/" + wl.Namespace + "/" + wl.Name}}
	for _, s := range wl.IPs {
		if a, err := netip.ParseAddr(s); err == nil {
			pw.IPs = append(pw.IPs, a.Unmap())
		}
	}
	for _, np := range wl.Ports {
		proto, ok := policy.ParseProtocol(np.Protocol)
		if !ok {
			proto = policy.TCP
		}
		pw.Ports = append(pw.Ports, policy.NamedPort{Name: np.Name, Port: np.Port, Protocol: proto})
	}
	return pw
}

// Owner returns the workload that holds address a, if any.
func (inv *Inventory) Owner(a netip.Addr) *api.HostWorkload {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	return inv.addrs[a.Unmap()]
}

// ByName returns a workload named namespace/name, if any.
func (inv *Inventory) ByName(key string) *api.HostWorkload {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	return inv.names[key]
}

// Records returns how many hosts hold a record of workload
// namespace/name (key).
func (inv *Inventory) Records(key string) int {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	return inv.named[key]
}

// HostIPOwner returns a host other than except that names a as its
// underlay address (the first by name), or "".
func (inv *Inventory) HostIPOwner(a netip.Addr, except string) string {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	first := ""
	for h := range inv.hostIPs[a.Unmap()] {
		if h != except && (first == "" || h < first) {
			first = h
		}
	}
	return first
}

// HostCounts returns the number of workloads of each host.
func (inv *Inventory) HostCounts() map[string]int {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	out := make(map[string]int, len(inv.hosts))
	for h, n := range inv.hosts {
		out[h] = n
	}
	return out
}

// Workloads returns the reported workloads as the policy model has them,
// leaving out any whose name or address another already holds (the
// first by host name stays). The list is built once per change of the
// inventory and shared: callers must not change it.
func (inv *Inventory) Workloads(log *slog.Logger) []*policy.Workload {
	inv.mu.RLock()
	if inv.list != nil && inv.listGen == inv.gen {
		defer inv.mu.RUnlock()
		return inv.list
	}
	gen := inv.gen
	entries := make([]*invEntry, 0, len(inv.byKey))
	for _, e := range inv.byKey {
		entries = append(entries, e)
	}
	inv.mu.RUnlock()

	sort.Slice(entries, func(i, j int) bool { return entries[i].sortKey < entries[j].sortKey })
	owner := make(map[netip.Addr]bool, len(entries))
	keys := make(map[string]bool, len(entries))
	out := make([]*policy.Workload, 0, len(entries))
	for _, e := range entries {
		w := e.pw
		key := e.sortKey[strings.IndexByte(e.sortKey, '/')+1:]
		clash := keys[key]
		for _, a := range w.IPs {
			clash = clash || owner[a]
		}
		if clash {
			log.Warn("workload left out of policy checks: its name or an address is taken", "workload", e.sortKey)
			continue
		}
		keys[key] = true
		for _, a := range w.IPs {
			owner[a] = true
		}
		out = append(out, w)
	}
	inv.mu.Lock()
	if inv.gen == gen {
		inv.list, inv.listGen = out, gen
	}
	inv.mu.Unlock()
	return out
}
