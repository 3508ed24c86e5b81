package benchdataplane

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// documents writes a policy set as native objects (api.Version), one JSON
// document each in a YAML stream, so that it can be applied to an agent.
// It covers what Generate produces, not every field of the model.
func documents(s *policy.Set) string {
	var b strings.Builder
	emit := func(kind, ns, name string, labels map[string]string, spec any) {
		obj := map[string]any{"apiVersion": api.Version, "kind": kind,
			"metadata": map[string]any{"name": name, "namespace": ns, "labels": labels}}
		if spec != nil {
			obj["spec"] = spec
		}
		data, err := json.Marshal(obj)
		if err != nil {
			panic(err) // maps of strings and numbers always encode
		}
		b.WriteString("---\n")
		b.Write(data)
		b.WriteByte('\n')
	}
	for _, n := range s.Namespaces {
		emit("Namespace", "", n.Name, n.Labels, nil)
	}
	for _, sg := range s.Segments {
		spec := map[string]any{}
		nsMatch(spec, "namespaces", "namespaceSelector", sg.Namespaces)
		if sg.Workloads != nil {
			spec["selector"] = selector(sg.Workloads)
		}
		var cidrs []map[string]any
		for _, c := range sg.CIDRs {
			cidrs = append(cidrs, cidr(c))
		}
		if cidrs != nil {
			spec["cidrs"] = cidrs
		}
		emit("Segment", "", sg.Name, nil, spec)
	}
	for _, w := range s.Walls {
		emit("Wall", "", w.Name, nil, map[string]any{"segments": w.Segments})
	}
	for _, w := range s.Workloads {
		var ips []string
		for _, a := range w.IPs {
			ips = append(ips, a.String())
		}
		var ports []map[string]any
		for _, p := range w.Ports {
			ports = append(ports, map[string]any{"name": p.Name, "port": p.Port, "protocol": p.Protocol.String()})
		}
		emit("Workload", w.Namespace, w.Name, w.Labels, map[string]any{"ips": ips, "ports": ports, "host": w.Host})
	}
	for _, p := range s.Policies {
		emit("Policy", p.Namespace, p.Name, nil, policySpec(p))
	}
	return b.String()
}

func policySpec(p *policy.Policy) map[string]any {
	subj := map[string]any{}
	if p.Subject.Segment != "" {
		subj["segment"] = p.Subject.Segment
	} else {
		nsMatch(subj, "namespaces", "namespaceSelector", p.Subject.Namespaces)
		subj["selector"] = selector(p.Subject.Workloads)
	}
	spec := map[string]any{"tier": p.Tier.String(), "priority": p.Priority, "mode": string(p.Mode), "appliesTo": subj}
	var iso []string
	for d, name := range []string{"ingress", "egress"} {
		if p.Isolate[d] {
			iso = append(iso, name)
		}
	}
	if iso != nil {
		spec["isolate"] = iso
	}
	for d, name := range map[policy.Direction]string{policy.Ingress: "ingress", policy.Egress: "egress"} {
		peersKey := "from"
		if d == policy.Egress {
			peersKey = "to"
		}
		var rules []map[string]any
		for i, r := range p.Rules(d) {
			rule := map[string]any{"name": "r" + strconv.Itoa(i), "action": string(r.Action), "log": r.Log}
			var peers []map[string]any
			for _, pe := range r.Peers {
				peers = append(peers, peer(pe)...)
			}
			if peers != nil {
				rule[peersKey] = peers
			}
			var svcs []map[string]any
			for _, sv := range r.Services {
				m := map[string]any{"protocol": sv.Protocol.String()}
				switch {
				case sv.Name != "":
					m["port"] = sv.Name
				case sv.Port != 0:
					m["port"] = sv.Port
					if sv.EndPort > sv.Port {
						m["endPort"] = sv.EndPort
					}
				}
				svcs = append(svcs, m)
			}
			if svcs != nil {
				rule["services"] = svcs
			}
			rules = append(rules, rule)
		}
		if rules != nil {
			spec[name] = rules
		}
	}
	return spec
}

// peer is one native peer per CIDR (the native form has one cidr each).
func peer(p policy.Peer) []map[string]any {
	switch {
	case p.Any:
		return []map[string]any{{"any": true}}
	case p.Segment != "":
		return []map[string]any{{"segment": p.Segment}}
	case len(p.CIDRs) > 0:
		var out []map[string]any
		for _, c := range p.CIDRs {
			out = append(out, cidr(c))
		}
		return out
	}
	m := map[string]any{}
	nsMatch(m, "namespaces", "namespaceSelector", p.Namespaces)
	if p.Namespaces.All() {
		// A selector alone means the policy's own namespace in the
		// native form (as in Kubernetes); the model's "all" is this.
		m["namespaceSelector"] = map[string]any{}
	}
	if p.Workloads != nil {
		m["selector"] = selector(p.Workloads)
	}
	return []map[string]any{m}
}

func nsMatch(m map[string]any, namesKey, selKey string, n policy.NamespaceMatch) {
	if len(n.Names) > 0 {
		m[namesKey] = n.Names
	}
	if n.Selector != nil {
		m[selKey] = selector(n.Selector)
	}
}

func selector(s *policy.Selector) map[string]any {
	if s == nil {
		return map[string]any{}
	}
	m := map[string]any{}
	if len(s.MatchLabels) > 0 {
		m["matchLabels"] = s.MatchLabels
	}
	return m
}

func cidr(c policy.CIDR) map[string]any {
	m := map[string]any{"cidr": c.Prefix.String()}
	if len(c.Except) > 0 {
		var ex []string
		for _, e := range c.Except {
			ex = append(ex, e.String())
		}
		m["except"] = ex
	}
	return m
}
