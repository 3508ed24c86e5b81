package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/pki"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

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
// The bounds are stored beside the host's status, under hosts/ (so the
// hosts mirror indexes them): hosts/H/bounds and hosts/H/held/ADDR.
func boundsKey(host string) string             { return prefixHosts + host + "/bounds" }
func heldKey(host string, a netip.Addr) string { return prefixHosts + host + "/held/" + a.String() }

// boundsRecord is a host's bounds as stored.
type boundsRecord struct {
	Ranges     []netip.Prefix `json:"ranges,omitempty"`
	HostIPs    []netip.Prefix `json:"hostIPs,omitempty"`
	Namespaces []string       `json:"namespaces,omitempty"`
}

// heldRecord is an address held for a host after an operator's delete.
type heldRecord struct {
	Workload string `json:"workload"` // namespace/name that had it
}

// boundsIndex is every host's bounds and held addresses, kept by the
// hosts mirror.
type boundsIndex struct {
	mu    sync.RWMutex
	hosts map[string]*boundsRecord
	held  map[netip.Addr]heldEntry
}

type heldEntry struct{ host, workload string }

// hostKeyParts splits a key under hosts/ into host and what follows it
// ("" for the status record).
func hostKeyParts(key string) (host, sub string) {
	host, sub, _ = strings.Cut(strings.TrimPrefix(key, prefixHosts), "/")
	return host, sub
}

func (bi *boundsIndex) reset() {
	bi.mu.Lock()
	defer bi.mu.Unlock()
	bi.hosts, bi.held = map[string]*boundsRecord{}, map[netip.Addr]heldEntry{}
}

// changeBounds applies a change of a host's bounds (new nil: removed).
func (bi *boundsIndex) changeBounds(key string, _, new *boundsRecord) {
	host, _ := hostKeyParts(key)
	bi.mu.Lock()
	defer bi.mu.Unlock()
	bi.init()
	if new != nil {
		bi.hosts[host] = new
	} else {
		delete(bi.hosts, host)
	}
}

// changeHeld applies a change of an address held for a host (new nil:
// released).
func (bi *boundsIndex) changeHeld(key string, _, new *heldRecord) {
	host, sub := hostKeyParts(key)
	a, err := netip.ParseAddr(strings.TrimPrefix(sub, "held/"))
	if err != nil {
		return
	}
	bi.mu.Lock()
	defer bi.mu.Unlock()
	bi.init()
	if new != nil {
		bi.held[a] = heldEntry{host: host, workload: new.Workload}
	} else if bi.held[a].host == host {
		delete(bi.held, a)
	}
}

func (bi *boundsIndex) init() {
	if bi.hosts == nil {
		bi.hosts, bi.held = map[string]*boundsRecord{}, map[netip.Addr]heldEntry{}
	}
}

func (bi *boundsIndex) of(host string) *boundsRecord {
	bi.mu.RLock()
	defer bi.mu.RUnlock()
	return bi.hosts[host]
}

// rangeOwner is the host (other than host) whose ranges hold a, if any.
func (bi *boundsIndex) rangeOwner(host string, a netip.Addr) string {
	bi.mu.RLock()
	defer bi.mu.RUnlock()
	for h, b := range bi.hosts {
		if h != host && inAny(b.Ranges, a) {
			return h
		}
	}
	return ""
}

// heldBy returns who holds a after an operator's delete.
func (bi *boundsIndex) heldBy(a netip.Addr) (heldEntry, bool) {
	bi.mu.RLock()
	defer bi.mu.RUnlock()
	e, ok := bi.held[a]
	return e, ok
}

// heldOf returns the addresses held for host.
func (bi *boundsIndex) heldOf(host string) map[netip.Addr]string {
	bi.mu.RLock()
	defer bi.mu.RUnlock()
	out := map[netip.Addr]string{}
	for a, e := range bi.held {
		if e.host == host {
			out[a] = e.workload
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

// specialPurpose says why a is no workload's or host's address, or "".
func specialPurpose(a netip.Addr) string {
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

// checkClaims checks what a report claims against the host's bounds and
// what other hosts hold; ws have passed the workload validator. Each
// problem is "path: what".
func (m *Manager) checkClaims(host string, ws []api.HostWorkload, deleted []string, replace bool) []string {
	var details []string
	bad := func(path, format string, args ...any) {
		details = append(details, path+": "+fmt.Sprintf(format, args...))
	}
	b := m.bounds.of(host)
	if b == nil {
		b = &boundsRecord{}
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
		if other := m.inv.byName(key); other != nil && other.Host != host {
			bad(at+".name", "workload %s is host %s's", key, other.Host)
		}
		for j, s := range wl.IPs {
			a := netip.MustParseAddr(s).Unmap() // the validator parsed it
			if why := m.addressProblem(host, b, a); why != "" {
				bad(fmt.Sprintf("%s.ips[%d]", at, j), "%s: %s", s, why)
			} else if o := m.inv.owner(a); o != nil && o.Host == host && !replace && !gone[o.Namespace+"/"+o.Name] {
				bad(fmt.Sprintf("%s.ips[%d]", at, j), "%s: already belongs to %s/%s on this host", s, o.Namespace, o.Name)
			}
		}
		if wl.HostIP != "" {
			a, err := netip.ParseAddr(wl.HostIP)
			switch {
			case err != nil || a.Zone() != "" || specialPurpose(a) != "":
				bad(at+".hostIP", "%q: want the host's unicast underlay address", wl.HostIP)
			case len(b.HostIPs) > 0 && !inAny(b.HostIPs, a):
				bad(at+".hostIP", "%s is outside host %s's underlay prefixes %s", a, host, prefixList(b.HostIPs))
			default:
				if why := m.hostIPProblem(host, a); why != "" {
					bad(at+".hostIP", "%s: %s", a, why)
				}
			}
		}
	}
	return details
}

// addressProblem says why host may not claim workload address a, or "".
func (m *Manager) addressProblem(host string, b *boundsRecord, a netip.Addr) string {
	if why := specialPurpose(a); why != "" {
		return why + ", which no workload may have"
	}
	if len(b.Ranges) > 0 && !inAny(b.Ranges, a) {
		return fmt.Sprintf("outside host %s's ranges %s", host, prefixList(b.Ranges))
	}
	if h := m.bounds.rangeOwner(host, a); h != "" {
		return "inside host " + h + "'s ranges"
	}
	if o := m.inv.owner(a); o != nil && o.Host != host {
		return fmt.Sprintf("already belongs to %s/%s on host %s", o.Namespace, o.Name, o.Host)
	}
	if e, ok := m.bounds.heldBy(a); ok && e.host != host && m.hostLive(e.host) {
		return fmt.Sprintf("held for host %s (its workload %s's record was deleted by an operator; the host has not released it)", e.host, e.workload)
	}
	if h := m.inv.hostIPOwner(a, host); h != "" {
		return "host " + h + "'s underlay address"
	}
	return ""
}

// hostIPProblem says why host may not name a as its underlay address.
func (m *Manager) hostIPProblem(host string, a netip.Addr) string {
	if h := m.inv.hostIPOwner(a, host); h != "" {
		return "host " + h + "'s underlay address"
	}
	if o := m.inv.owner(a); o != nil {
		return fmt.Sprintf("the address of workload %s/%s on host %s", o.Namespace, o.Name, o.Host)
	}
	if h := m.bounds.rangeOwner("", a); h != "" {
		return "inside host " + h + "'s workload ranges"
	}
	return ""
}

// releaseHeld are the ops that release what host's report gives back:
// a full report (replace) every held address, a partial one those it
// now claims again and those of workloads it deletes.
func (m *Manager) releaseHeld(host string, put []api.HostWorkload, deleted []string, replace bool) []store.Op {
	held := m.bounds.heldOf(host)
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
			ops = append(ops, store.Delete(heldKey(host, a)))
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].Key < ops[j].Key })
	return ops
}

// release removes the holds host's stored report gave back, after its
// workloads are written (an address claimed again is never free between).
func (m *Manager) release(ctx context.Context, p principal, host string, put []api.HostWorkload, deleted []string, replace bool) error {
	ops := m.releaseHeld(host, put, deleted, replace)
	if len(ops) == 0 {
		return nil
	}
	released := make([]string, len(ops))
	for i, op := range ops {
		released[i] = op.Key[strings.LastIndexByte(op.Key, '/')+1:]
	}
	rev, _, err := m.commitAudited(ctx, nil, ops, auditEntry{actor: p, action: "host.release", object: "host/" + host,
		detail: map[string]any{"released": released}})
	if err != nil {
		return err
	}
	return m.hosts.WaitRev(ctx, rev)
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

func (m *Manager) getHostBounds(w http.ResponseWriter, r *http.Request, _ principal) error {
	host := r.PathValue("host")
	out := api.HostBounds{}
	if b := m.bounds.of(host); b != nil {
		out.Ranges, out.HostIPs, out.Namespaces = prefixStrings(b.Ranges), prefixStrings(b.HostIPs), b.Namespaces
	}
	for a := range m.bounds.heldOf(host) {
		out.Held = append(out.Held, a.String())
	}
	sort.Strings(out.Held)
	writeJSON(w, http.StatusOK, out)
	return nil
}

func prefixStrings(ps []netip.Prefix) []string {
	if len(ps) == 0 {
		return nil
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// putHostBounds sets what host may claim. It refuses ranges that overlap
// another host's, and bounds that the host's workloads as stored already
// break (the admin first moves or removes those), so that what is
// stored always keeps its own bounds.
func (m *Manager) putHostBounds(w http.ResponseWriter, r *http.Request, p principal) error {
	host := r.PathValue("host")
	var req api.HostBounds
	if err := m.decode(w, r, &req); err != nil {
		return err
	}
	rec, details := m.parseBounds(host, req)
	if len(details) == 0 {
		details = m.boundsBroken(host, rec)
	}
	if len(details) > 0 {
		return fault.New(fault.Invalid, details, "the bounds of host %s are invalid; nothing was changed", host)
	}
	value, _ := json.Marshal(rec)
	ctx := r.Context()
	rev, _, err := m.commitAudited(ctx, nil, []store.Op{store.Put(boundsKey(host), value)},
		auditEntry{actor: p, action: "host.bounds", object: "host/" + host, detail: req})
	if err != nil {
		return err
	}
	if err := m.hosts.WaitRev(ctx, rev); err != nil {
		return err
	}
	return m.getHostBounds(w, r, p)
}

func (m *Manager) parseBounds(host string, req api.HostBounds) (*boundsRecord, []string) {
	var details []string
	rec := &boundsRecord{}
	if err := pki.ValidHost(host); err != nil {
		details = append(details, err.Error())
	}
	if len(req.Held) > 0 {
		details = append(details, "held: read only; an address is released by its host's own report")
	}
	prefixes := func(field string, in []string) []netip.Prefix {
		var out []netip.Prefix
		for i, s := range in {
			pf, err := objects.ParsePrefix(s)
			switch {
			case err != nil:
				details = append(details, fmt.Sprintf("%s[%d]: %q: want a CIDR such as 10.1.0.0/24", field, i, s))
			case pf != pf.Masked():
				details = append(details, fmt.Sprintf("%s[%d]: %q has host bits set; write %s", field, i, s, pf.Masked()))
			case specialPurpose(pf.Addr()) != "" && pf.Bits() > 0:
				details = append(details, fmt.Sprintf("%s[%d]: %s starts in %s", field, i, pf, specialPurpose(pf.Addr())))
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
		m.bounds.mu.RLock()
		for h, b := range m.bounds.hosts {
			for _, o := range b.Ranges {
				if h != host && o.Overlaps(pf) {
					details = append(details, fmt.Sprintf("ranges[%d]: %s overlaps host %s's range %s", i, pf, h, o))
				}
			}
		}
		m.bounds.mu.RUnlock()
	}
	return rec, details
}

// boundsBroken lists what is stored that the new bounds would break: the
// host's own workloads outside them, other hosts' workloads inside its
// ranges.
func (m *Manager) boundsBroken(host string, rec *boundsRecord) []string {
	var details []string
	m.tab.workloads.Each(prefixWorkloads, func(_ string, it *workloadItem) {
		wl := it.workload
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
	})
	sort.Strings(details)
	return details
}

// reportRefusalEvery is how often one host's refused reports are audited: a
// host that keeps sending what is refused (an agent retries) cannot fill
// the store; the entries in between are counted in the next one.
const reportRefusalEvery = 10 * time.Second

// refusalLog rate-limits the audit entries and alerts of refused reports.
type refusalLog struct {
	mu         sync.Mutex
	last       map[string]time.Time
	suppressed map[string]int
}

// due reports whether a refusal of host's is audited now, and how many
// were not since the last one.
func (rl *refusalLog) due(host string, now time.Time) (bool, int) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if rl.last == nil {
		rl.last, rl.suppressed = map[string]time.Time{}, map[string]int{}
	}
	if t, ok := rl.last[host]; ok && now.Sub(t) < reportRefusalEvery {
		rl.suppressed[host]++
		return false, 0
	}
	n := rl.suppressed[host]
	rl.last[host], rl.suppressed[host] = now, 0
	return true, n
}

// refusedReport audits a refused workload report and raises an alert (an
// error in the log): a host claiming what it may not is how a
// compromised host shows itself.
func (m *Manager) refusedReport(ctx context.Context, p principal, host string, err error) {
	var fe *fault.Error
	if !errors.As(err, &fe) {
		return
	}
	// The alert (GET /v1/alerts) is raised once per host and counts the
	// repeats; the audit entries below are rate-limited on their own.
	m.raise("report-refused", "host/"+host, fe.Msg)
	ok, suppressed := m.reportRefusals.due(host, m.now())
	if !ok {
		return
	}
	details := fe.Details
	if len(details) > 20 {
		details = append(details[:20:20], fmt.Sprintf("… and %d more", len(fe.Details)-20))
	}
	m.log.Error("ALERT: a host's workload report was refused", "host", host, "by", p.String(), "reason", fe.Msg,
		"details", strings.Join(details, "; "), "refused_unaudited_since_last", suppressed)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	// The audit entry records the status the report was answered with.
	detail := map[string]any{"status": fault.StatusOf(fe), "reason": fe.Msg, "details": details, "suppressed": suppressed}
	if _, _, err := m.commitAudited(ctx, nil, nil, auditEntry{actor: p, action: "workloads.refused", object: "host/" + host, detail: detail}); err != nil {
		m.log.Error("audit a refused report", "host", host, "err", err)
	}
}
