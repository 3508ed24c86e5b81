package agent

import (
	"fmt"
	"sort"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// workload checks a registration and converts it to the model: a workload
// on this host. It is checked by objects.CheckWorkload, the validator a
// manager checks its hosts' reports with, so that what an agent takes its
// manager takes too.
func workload(r api.WorkloadRegistration, host string) (*policy.Workload, []string) {
	var errs []string
	if r.Interface == "" || len(r.Interface) > 15 || strings.ContainsAny(r.Interface, "/ \t") {
		errs = append(errs, fmt.Sprintf("interface: invalid interface name %q: the host-side interface, 1-15 characters", r.Interface))
	}
	if len(r.IPs) == 0 {
		errs = append(errs, "ips: a workload needs at least one address")
	}
	w, werrs := objects.CheckWorkload(api.InventoryWorkload{Namespace: r.Namespace, Name: r.Name, Labels: r.Labels,
		IPs: r.IPs, Ports: r.Ports, Host: host}, "")
	for _, e := range werrs {
		errs = append(errs, e.Error())
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
