package policy

import (
	"fmt"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/source"
	"go.yaml.in/yaml/v3"
)

// Bounds on what one reported workload may carry. A host's report is
// input from a machine the manager does not fully trust, so it is
// bounded before anything is allocated for it (identities, store keys).
const (
	MaxWorkloadLabels = 64
	MaxWorkloadIPs    = 16
	MaxWorkloadPorts  = 64
)

// DecodeHostWorkloads validates the workloads of one host's report with
// the very validator that inventory workloads go through (DecodeInventory
// and Validate), so that the manager accepts exactly what every agent
// will enforce. where names the report in errors ("report of host
// node-1"); each error's path is workloads[i].field. It returns the
// errors of each workload by its index, so that a caller can leave out
// the bad ones (an agent) or refuse the whole report (the manager).
func DecodeHostWorkloads(where string, ws []api.HostWorkload) ([]*Workload, map[int]source.Errors) {
	bad := map[int]source.Errors{}
	items := make([]any, 0, len(ws))
	index := make([]int, 0, len(ws)) // the report's index of each item
	for i, w := range ws {
		var errs source.Errors
		at := source.Pos{File: where}
		p := fmt.Sprintf("workloads[%d].", i)
		if len(w.Labels) > MaxWorkloadLabels {
			errs.Add(at, p+"labels", "%d labels; a workload may carry at most %d", len(w.Labels), MaxWorkloadLabels)
		}
		if len(w.IPs) > MaxWorkloadIPs {
			errs.Add(at, p+"ips", "%d addresses; a workload may have at most %d", len(w.IPs), MaxWorkloadIPs)
		}
		if len(w.Ports) > MaxWorkloadPorts {
			errs.Add(at, p+"ports", "%d ports; a workload may name at most %d", len(w.Ports), MaxWorkloadPorts)
		}
		if len(errs) > 0 {
			bad[i] = errs
			continue
		}
		items = append(items, inventoryItem(w))
		index = append(index, i)
	}
	var doc yaml.Node
	if err := doc.Encode(map[string]any{"workloads": items}); err != nil {
		bad[-1] = source.Errors{{Pos: source.Pos{File: where}, Msg: fmt.Sprintf("encode the report: %v", err)}}
		return nil, bad
	}
	// Each item's nodes carry line k+1, so that an error of item k, by
	// its position, names the report's workload index[k].
	for k, item := range doc.Content[1].Content {
		setLine(item, k+1)
	}
	set, errs := DecodeInventory(where, &doc)
	if len(errs) == 0 {
		var verrs source.Errors
		validateWorkloads(set.Workloads, &verrs)
		errs = verrs
	}
	for _, e := range errs {
		k := e.Pos.Line - 1
		if k < 0 || k >= len(index) {
			bad[-1] = append(bad[-1], e)
			continue
		}
		// Paths name the item among those kept, or (Validate's) only the
		// field: name the report's workload.
		at := fmt.Sprintf("workloads[%d]", index[k])
		if p := fmt.Sprintf("workloads[%d]", k); strings.HasPrefix(e.Path, p) {
			e.Path = at + e.Path[len(p):]
		} else {
			e.Path = at + "." + e.Path
		}
		e.Pos = source.Pos{File: where}
		bad[index[k]] = append(bad[index[k]], e)
	}
	if len(bad) > 0 {
		return nil, bad
	}
	return set.Workloads, nil
}

func setLine(n *yaml.Node, line int) {
	n.Line, n.Column = line, 1
	for _, c := range n.Content {
		setLine(c, line)
	}
}

// inventoryItem is a reported workload as an inventory file has it, each
// field spelled as the inventory decoder reads it.
func inventoryItem(w api.HostWorkload) map[string]any {
	ports := make([]any, 0, len(w.Ports))
	for _, p := range w.Ports {
		ports = append(ports, map[string]any{"name": p.Name, "port": p.Port, "protocol": p.Protocol})
	}
	ips := make([]any, 0, len(w.IPs))
	for _, s := range w.IPs {
		ips = append(ips, s)
	}
	labels := make(map[string]any, len(w.Labels))
	for k, v := range w.Labels {
		labels[k] = v
	}
	return map[string]any{"namespace": w.Namespace, "name": w.Name, "labels": labels, "ips": ips, "ports": ports, "host": w.Host}
}
