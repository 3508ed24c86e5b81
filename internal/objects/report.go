package objects

import (
	"fmt"
	"net/netip"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
)

// Bounds on what one reported workload may carry. A host's report is
// input from a machine the manager does not fully trust, so it is
// bounded before anything is allocated for it (identities, store keys);
// labels are bounded by policy.MaxLabels.
const (
	MaxWorkloadIPs   = 16
	MaxWorkloadPorts = 64
)

// QuarantinedLabel is reserved: it is how a quarantined workload will be
// shown to the compiler, so only the manager may ever set it. A host's
// registration that carries it (with any value) is refused, so that no
// host can claim it or mark a workload as explicitly not quarantined.
const QuarantinedLabel = "bulkhead.dev/quarantined"

// CheckHostWorkloads validates the workloads of one host's report with
// CheckWorkload, the validator every workload goes through, and checks
// that no name or address is given twice, so that a manager accepts
// exactly what every agent will enforce. where names the report in errors
// ("report of host node-1"); each error's path is workloads[i].field. It
// returns the errors of each workload by its index, so that a caller can
// leave out the bad ones (an agent) or refuse the whole report (the
// manager).
func CheckHostWorkloads(where string, ws []api.HostWorkload) ([]*policy.Workload, map[int]source.Errors) {
	bad := map[int]source.Errors{}
	at := source.Pos{File: where}
	out := make([]*policy.Workload, 0, len(ws))
	names := map[string]int{}
	owner := map[netip.Addr]int{}
	for i, w := range ws {
		p := fmt.Sprintf("workloads[%d].", i)
		var errs source.Errors
		if len(w.IPs) > MaxWorkloadIPs {
			errs.Add(at, p+"ips", "%d addresses; a workload may have at most %d", len(w.IPs), MaxWorkloadIPs)
		}
		if len(w.Ports) > MaxWorkloadPorts {
			errs.Add(at, p+"ports", "%d ports; a workload may name at most %d", len(w.Ports), MaxWorkloadPorts)
		}
		if _, ok := w.Labels[QuarantinedLabel]; ok {
			errs.Add(at, p+"labels", "label %q is reserved for the manager's quarantine; a registration may not carry it", QuarantinedLabel)
		}
		if len(errs) > 0 {
			bad[i] = errs
			continue
		}
		m, werrs := CheckWorkload(api.InventoryWorkload{Namespace: w.Namespace, Name: w.Name, Labels: w.Labels,
			IPs: w.IPs, Ports: w.Ports, Host: w.Host, Pos: at}, p)
		if len(werrs) > 0 {
			bad[i] = werrs
			continue
		}
		if first, dup := names[m.Key()]; dup {
			bad[i] = append(bad[i], &source.Error{Pos: at, Path: p + "name", Msg: fmt.Sprintf("workload %s is given twice (first as workloads[%d])", m.Key(), first)})
			continue
		}
		names[m.Key()] = i
		for j, a := range m.IPs {
			if first, dup := owner[a]; dup {
				bad[i] = append(bad[i], &source.Error{Pos: at, Path: fmt.Sprintf("%sips[%d]", p, j),
					Msg: fmt.Sprintf("address %s of %s already belongs to workloads[%d]", a, m.Key(), first)})
			}
			owner[a] = i
		}
		if len(bad[i]) == 0 {
			out = append(out, m)
		}
	}
	if len(bad) > 0 {
		return nil, bad
	}
	return out, nil
}
