package agent

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

var (
	dnsNameRE  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
	portNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
)

// workload checks a registration and converts it to the model: a workload
// on this host.
func workload(r api.WorkloadRegistration, host string) (*policy.Workload, []string) {
	var errs []string
	bad := func(field, format string, args ...any) {
		errs = append(errs, field+": "+fmt.Sprintf(format, args...))
	}
	for field, v := range map[string]string{"namespace": r.Namespace, "name": r.Name} {
		if v == "" || len(v) > 253 || !dnsNameRE.MatchString(v) {
			bad(field, "invalid %s %q: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit", field, v)
		}
	}
	if r.Interface == "" || len(r.Interface) > 15 || strings.ContainsAny(r.Interface, "/ \t") {
		bad("interface", "invalid interface name %q: the host-side interface, 1-15 characters", r.Interface)
	}
	for k, v := range r.Labels {
		if k == "" || len(k) > 316 || len(v) > 63 {
			bad("labels."+k, "a label key is 1-316 characters (prefix/name) and a value at most 63")
		}
	}
	w := &policy.Workload{Namespace: r.Namespace, Name: r.Name, Labels: r.Labels, Host: host}
	if len(r.IPs) == 0 {
		bad("ips", "a workload needs at least one address")
	}
	seen := map[netip.Addr]bool{}
	for i, s := range r.IPs {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			bad(fmt.Sprintf("ips[%d]", i), "invalid IP address %q", s)
			continue
		}
		a = a.Unmap()
		if seen[a] {
			bad(fmt.Sprintf("ips[%d]", i), "address %s is given twice", a)
			continue
		}
		seen[a] = true
		w.IPs = append(w.IPs, a)
	}
	for i, p := range r.Ports {
		f := fmt.Sprintf("ports[%d]", i)
		if len(p.Name) > 15 || !portNameRE.MatchString(p.Name) {
			bad(f+".name", "invalid port name %q: 1-15 lowercase letters, digits and '-'", p.Name)
		}
		if p.Port < 1 || p.Port > 65535 {
			bad(f+".port", "port %d is out of range 1-65535", p.Port)
		}
		proto := policy.TCP
		if p.Protocol != "" {
			var ok bool
			if proto, ok = policy.ParseProtocol(p.Protocol); !ok || !proto.HasPorts() {
				bad(f+".protocol", "invalid protocol %q; valid: TCP, UDP, SCTP", p.Protocol)
			}
		}
		w.Ports = append(w.Ports, policy.NamedPort{Name: p.Name, Port: p.Port, Protocol: proto})
	}
	sort.Strings(errs)
	return w, errs
}

// registration is a registered workload, as given and as the model sees it.
type registration struct {
	api api.WorkloadRegistration
	w   *policy.Workload
	key string // namespace/name
}

func (r *registration) attachment() dataplane.Attachment {
	return dataplane.Attachment{Workload: r.key, Interface: r.api.Interface, Addrs: r.w.IPs}
}

func sortedRegistrations(regs map[string]*registration) []*registration {
	out := make([]*registration, 0, len(regs))
	for _, r := range regs {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

// sameRegistration reports whether two registrations say the same.
func sameRegistration(a, b api.WorkloadRegistration) bool {
	if a.Namespace != b.Namespace || a.Name != b.Name || a.Interface != b.Interface || a.ContainerID != b.ContainerID ||
		len(a.Labels) != len(b.Labels) || len(a.IPs) != len(b.IPs) || len(a.Ports) != len(b.Ports) {
		return false
	}
	for k, v := range a.Labels {
		if w, ok := b.Labels[k]; !ok || w != v {
			return false
		}
	}
	for i := range a.IPs {
		if a.IPs[i] != b.IPs[i] {
			return false
		}
	}
	for i := range a.Ports {
		if a.Ports[i].Name != b.Ports[i].Name || a.Ports[i].Port != b.Ports[i].Port || a.Ports[i].Protocol != b.Ports[i].Protocol {
			return false
		}
	}
	return true
}
