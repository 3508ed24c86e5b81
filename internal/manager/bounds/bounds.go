// Package bounds decides what a host may claim in its workload reports.
// A host speaks only for itself. A compromised container host is the
// threat Bulkhead exists for, so what its certificate lets it claim is
// bounded (docs/security.md, "What a host may claim"):
//
//   - never a special-purpose address (unspecified, loopback, link-local
//     such as the workloads' gateway 169.254.1.1, multicast, broadcast,
//     reserved);
//   - never an address or a workload name another host holds, nor an
//     address inside another host's ranges, nor another host's hostIP;
//   - only addresses inside its own ranges, when an admin set them, and
//     only namespaces the admin allows it, when an admin set them;
//   - an address whose record an operator deleted stays the host's
//     (held) until the host's own report releases it, so that another
//     host cannot take a live address in the gap.
//
// The bounds are stored beside the host's status, under hosts/:
// hosts/H/bounds (a Record) and hosts/H/held/ADDR (a Held). An Index
// holds them all, kept current by the manager's copy of hosts/
// (internal/manager/mirror); a Checker judges a report against the Index
// and the reported workloads (internal/manager/inventory). The handlers
// that set and show bounds, and that store what a report releases, are
// in internal/manager (bounds.go).
package bounds

import (
	"fmt"
	"iter"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/pki"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Prefix is where the hosts' records are: their status at Prefix+H.
const Prefix = "hosts/"

// Key is the store key of host's bounds; HeldKey that of an address held
// for it.
func Key(host string) string                   { return Prefix + host + "/bounds" }
func HeldKey(host string, a netip.Addr) string { return Prefix + host + "/held/" + a.String() }

// KeyParts splits a key under Prefix into host and what follows it (""
// for the status record, "bounds", "held/ADDR").
func KeyParts(key string) (host, sub string) {
	host, sub, _ = strings.Cut(strings.TrimPrefix(key, Prefix), "/")
	return host, sub
}

// Record is a host's bounds as stored.
type Record struct {
	Ranges     []netip.Prefix `json:"ranges,omitempty"`
	HostIPs    []netip.Prefix `json:"hostIPs,omitempty"`
	Namespaces []string       `json:"namespaces,omitempty"`
}

// Held is an address held for a host after an operator's delete.
type Held struct {
	Workload string `json:"workload"` // namespace/name that had it
}

// Index is every host's bounds and held addresses. It is safe for
// concurrent use; its zero value is empty and ready.
type Index struct {
	mu    sync.RWMutex
	hosts map[string]*Record
	held  map[netip.Addr]Holder
}

// Holder is who an address is held for.
type Holder struct{ Host, Workload string }

// Reset empties the index: the store is listed again.
func (ix *Index) Reset() {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.hosts, ix.held = map[string]*Record{}, map[netip.Addr]Holder{}
}

// ChangeBounds applies a change of the bounds at store key key (new nil:
// removed).
func (ix *Index) ChangeBounds(key string, _, new *Record) {
	host, _ := KeyParts(key)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.init()
	if new != nil {
		ix.hosts[host] = new
	} else {
		delete(ix.hosts, host)
	}
}

// ChangeHeld applies a change of the address held at store key key (new
// nil: released).
func (ix *Index) ChangeHeld(key string, _, new *Held) {
	host, sub := KeyParts(key)
	a, err := netip.ParseAddr(strings.TrimPrefix(sub, "held/"))
	if err != nil {
		return
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.init()
	if new != nil {
		ix.held[a] = Holder{Host: host, Workload: new.Workload}
	} else if ix.held[a].Host == host {
		delete(ix.held, a)
	}
}

func (ix *Index) init() {
	if ix.hosts == nil {
		ix.hosts, ix.held = map[string]*Record{}, map[netip.Addr]Holder{}
	}
}

// Of returns host's bounds, nil if an admin set none.
func (ix *Index) Of(host string) *Record {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.hosts[host]
}

// RangeOwner is the host (other than host) whose ranges hold a, if any.
func (ix *Index) RangeOwner(host string, a netip.Addr) string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for h, b := range ix.hosts {
		if h != host && inAny(b.Ranges, a) {
			return h
		}
	}
	return ""
}

// HeldBy returns who holds a after an operator's delete.
func (ix *Index) HeldBy(a netip.Addr) (Holder, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	e, ok := ix.held[a]
	return e, ok
}

// HeldOf returns the addresses held for host.
func (ix *Index) HeldOf(host string) map[netip.Addr]string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := map[netip.Addr]string{}
	for a, e := range ix.held {
		if e.Host == host {
			out[a] = e.Workload
		}
	}
	return out
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// reserved are special-purpose IPv4 blocks (RFC 6890) that IsGlobalUnicast
// lets through and that no workload may have.
var reserved = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("240.0.0.0/4"),
}

// SpecialPurpose says why a is no workload's or host's address, or "".
func SpecialPurpose(a netip.Addr) string {
	a = a.Unmap()
	switch {
	case a.IsUnspecified():
		return "the unspecified address"
	case a.IsLoopback():
		return "a loopback address"
	case a.IsMulticast():
		return "a multicast address"
	case a.IsLinkLocalUnicast():
		return "a link-local address (the workloads' gateway is one)"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "the broadcast address"
	case inAny(reserved, a), !a.IsGlobalUnicast():
		return "a reserved address"
	}
	return ""
}

// Workloads is what a Checker asks of the reported workloads; an
// *inventory.Inventory is one.
type Workloads interface {
	// Owner returns the workload that holds address a, if any.
	Owner(a netip.Addr) *api.HostWorkload
	// ByName returns a workload named namespace/name, if any.
	ByName(namespaceName string) *api.HostWorkload
	// HostIPOwner returns a host other than except that names a as its
	// underlay address, or "".
	HostIPOwner(a netip.Addr, except string) string
}

// Checker judges what hosts claim against their bounds and what the
// other hosts hold.
type Checker struct {
	Index     *Index
	Workloads Workloads
	// Live reports whether host has reported its status lately: an
	// address held for a host that is not live is free to take.
	Live func(host string) bool
}

// Claims checks what a report of host claims (ws put, deleted gone; a
// full report if replace); ws have passed the workload validator. Each
// problem is "path: what"; none, the report may be stored.
func (c *Checker) Claims(host string, ws []api.HostWorkload, deleted []string, replace bool) []string {
	var details []string
	bad := func(path, format string, args ...any) {
		details = append(details, path+": "+fmt.Sprintf(format, args...))
	}
	b := c.Index.Of(host)
	if b == nil {
		b = &Record{}
	}
	// On POST, this host's workloads the report leaves in place keep
	// their addresses: a new workload may not take one of them.
	gone := map[string]bool{}
	for _, d := range deleted {
		gone[d] = true
	}
	for _, wl := range ws {
		gone[wl.Namespace+"/"+wl.Name] = true
	}
	for i, wl := range ws {
		at := fmt.Sprintf("workloads[%d]", i)
		key := wl.Namespace + "/" + wl.Name
		if len(b.Namespaces) > 0 && !contains(b.Namespaces, wl.Namespace) {
			bad(at+".namespace", "host %s may not run workloads in namespace %q; an admin allows it namespaces %s",
				host, wl.Namespace, strings.Join(b.Namespaces, ", "))
		}
		if other := c.Workloads.ByName(key); other != nil && other.Host != host {
			bad(at+".name", "workload %s is host %s's", key, other.Host)
		}
		for j, s := range wl.IPs {
			a := netip.MustParseAddr(s).Unmap() // the validator parsed it
			if why := c.addressProblem(host, b, a); why != "" {
				bad(fmt.Sprintf("%s.ips[%d]", at, j), "%s: %s", s, why)
			} else if o := c.Workloads.Owner(a); o != nil && o.Host == host && !replace && !gone[o.Namespace+"/"+o.Name] {
				bad(fmt.Sprintf("%s.ips[%d]", at, j), "%s: already belongs to %s/%s on this host", s, o.Namespace, o.Name)
			}
		}
		if wl.HostIP != "" {
			a, err := netip.ParseAddr(wl.HostIP)
			switch {
			case err != nil || a.Zone() != "" || SpecialPurpose(a) != "":
				bad(at+".hostIP", "%q: want the host's unicast underlay address", wl.HostIP)
			case len(b.HostIPs) > 0 && !inAny(b.HostIPs, a):
				bad(at+".hostIP", "%s is outside host %s's underlay prefixes %s", a, host, prefixList(b.HostIPs))
			default:
				if why := c.hostIPProblem(host, a); why != "" {
					bad(at+".hostIP", "%s: %s", a, why)
				}
			}
		}
	}
	return details
}

// addressProblem says why host may not claim workload address a, or "".
func (c *Checker) addressProblem(host string, b *Record, a netip.Addr) string {
	if why := SpecialPurpose(a); why != "" {
		return why + ", which no workload may have"
	}
	if len(b.Ranges) > 0 && !inAny(b.Ranges, a) {
		return fmt.Sprintf("outside host %s's ranges %s", host, prefixList(b.Ranges))
	}
	if h := c.Index.RangeOwner(host, a); h != "" {
		return "inside host " + h + "'s ranges"
	}
	if o := c.Workloads.Owner(a); o != nil && o.Host != host {
		return fmt.Sprintf("already belongs to %s/%s on host %s", o.Namespace, o.Name, o.Host)
	}
	if e, ok := c.Index.HeldBy(a); ok && e.Host != host && c.Live(e.Host) {
		return fmt.Sprintf("held for host %s (its workload %s's record was deleted by an operator; the host has not released it)", e.Host, e.Workload)
	}
	if h := c.Workloads.HostIPOwner(a, host); h != "" {
		return "host " + h + "'s underlay address"
	}
	return ""
}

// hostIPProblem says why host may not name a as its underlay address.
func (c *Checker) hostIPProblem(host string, a netip.Addr) string {
	if h := c.Workloads.HostIPOwner(a, host); h != "" {
		return "host " + h + "'s underlay address"
	}
	if o := c.Workloads.Owner(a); o != nil {
		return fmt.Sprintf("the address of workload %s/%s on host %s", o.Namespace, o.Name, o.Host)
	}
	if h := c.Index.RangeOwner("", a); h != "" {
		return "inside host " + h + "'s workload ranges"
	}
	return ""
}

// Release returns the ops that release what host's report gives back:
// a full report (replace) every held address, a partial one those it
// now claims again and those of workloads it deletes.
func (ix *Index) Release(host string, put []api.HostWorkload, deleted []string, replace bool) []store.Op {
	held := ix.HeldOf(host)
	if len(held) == 0 {
		return nil
	}
	claimed := map[netip.Addr]bool{}
	for _, wl := range put {
		for _, s := range wl.IPs {
			if a, err := netip.ParseAddr(s); err == nil {
				claimed[a.Unmap()] = true
			}
		}
	}
	var ops []store.Op
	for a, wl := range held {
		if replace || claimed[a] || contains(deleted, wl) {
			ops = append(ops, store.Delete(HeldKey(host, a)))
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].Key < ops[j].Key })
	return ops
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// Parse reads the bounds an admin sets for host, each problem "field:
// what"; ranges may not overlap another host's.
func (ix *Index) Parse(host string, req api.HostBounds) (*Record, []string) {
	var details []string
	rec := &Record{}
	if err := pki.ValidHost(host); err != nil {
		details = append(details, err.Error())
	}
	if len(req.Held) > 0 {
		details = append(details, "held: read only; an address is released by its host's own report")
	}
	prefixes := func(field string, in []string) []netip.Prefix {
		var out []netip.Prefix
		for i, s := range in {
			pf, err := objects.ParsePrefix(s) // masks host bits, as ipBlocks are read
			raw, rerr := netip.ParsePrefix(s)
			switch {
			case err != nil:
				details = append(details, fmt.Sprintf("%s[%d]: %q: want a CIDR such as 10.1.0.0/24", field, i, s))
			case rerr == nil && raw != raw.Masked():
				details = append(details, fmt.Sprintf("%s[%d]: %q has host bits set; write %s", field, i, s, pf))
			case SpecialPurpose(pf.Addr()) != "" && pf.Bits() > 0:
				details = append(details, fmt.Sprintf("%s[%d]: %s starts in %s", field, i, pf, SpecialPurpose(pf.Addr())))
			case pf.Bits() == 0:
				details = append(details, fmt.Sprintf("%s[%d]: %s is every address; give the host's own prefixes", field, i, pf))
			default:
				out = append(out, pf)
			}
		}
		return out
	}
	rec.Ranges = prefixes("ranges", req.Ranges)
	rec.HostIPs = prefixes("hostIPs", req.HostIPs)
	for i, ns := range req.Namespaces {
		if pki.ValidHost(ns) != nil {
			details = append(details, fmt.Sprintf("namespaces[%d]: %q: want a lowercase name of letters, digits, '-' and '.'", i, ns))
		}
	}
	rec.Namespaces = req.Namespaces
	for i, pf := range rec.Ranges {
		ix.mu.RLock()
		for h, b := range ix.hosts {
			for _, o := range b.Ranges {
				if h != host && o.Overlaps(pf) {
					details = append(details, fmt.Sprintf("ranges[%d]: %s overlaps host %s's range %s", i, pf, h, o))
				}
			}
		}
		ix.mu.RUnlock()
	}
	return rec, details
}

// Broken lists what is stored (every workload reported) that host's new
// bounds rec would break: the host's own workloads outside them, other
// hosts' workloads inside its ranges.
func Broken(host string, rec *Record, stored iter.Seq[*api.HostWorkload]) []string {
	var details []string
	for wl := range stored {
		for _, s := range wl.IPs {
			a, err := netip.ParseAddr(s)
			if err != nil {
				continue
			}
			a = a.Unmap()
			switch {
			case wl.Host == host && len(rec.Ranges) > 0 && !inAny(rec.Ranges, a):
				details = append(details, fmt.Sprintf("ranges: workload %s/%s of host %s has %s, outside them", wl.Namespace, wl.Name, host, a))
			case wl.Host != host && inAny(rec.Ranges, a):
				details = append(details, fmt.Sprintf("ranges: hold %s, the address of workload %s/%s on host %s", a, wl.Namespace, wl.Name, wl.Host))
			}
		}
		if wl.Host == host && len(rec.Namespaces) > 0 && !contains(rec.Namespaces, wl.Namespace) {
			details = append(details, fmt.Sprintf("namespaces: workload %s/%s of host %s runs in namespace %s", wl.Namespace, wl.Name, host, wl.Namespace))
		}
	}
	sort.Strings(details)
	return details
}
