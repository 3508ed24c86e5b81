package feed

import (
	"encoding/json"
	"net/netip"
	"sort"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
)

// AnnotationHostIP carries a remote workload's host underlay address on
// the Workload object the agent holds for it.
const AnnotationHostIP = "bulkhead.dev/host-ip"

// remoteWorkload is another host's workload as the agent holds it: a
// Workload object with spec.host set, so that compile treats it as
// remote (its side of a connection is judged on its own host).
type remoteWorkload struct {
	host, namespace, name string
	ips                   []netip.Addr
	hostIP                netip.Addr
	doc                   string // the Workload object, JSON
}

func (r remoteWorkload) ref() api.ObjectRef {
	return api.ObjectRef{Kind: "Workload", Namespace: r.namespace, Name: r.name}
}

type workloadObject struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Metadata   workloadMeta   `json:"metadata"`
	Spec       workloadSpecIn `json:"spec"`
}

type workloadMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type workloadSpecIn struct {
	IPs   []string        `json:"ips"`
	Ports []api.NamedPort `json:"ports,omitempty"`
	Host  string          `json:"host"`
}

// newRemote makes the Workload object of another host's workload.
func newRemote(w *api.HostWorkload) remoteWorkload {
	r := remoteWorkload{host: w.Host, namespace: w.Namespace, name: w.Name}
	obj := workloadObject{APIVersion: api.Version, Kind: "Workload",
		Metadata: workloadMeta{Name: w.Name, Namespace: w.Namespace, Labels: w.Labels},
		Spec:     workloadSpecIn{IPs: w.IPs, Ports: w.Ports, Host: w.Host}}
	if a, err := netip.ParseAddr(w.HostIP); err == nil {
		r.hostIP = a
		obj.Metadata.Annotations = map[string]string{AnnotationHostIP: a.String()}
	}
	for _, s := range w.IPs {
		if a, err := netip.ParseAddr(s); err == nil {
			r.ips = append(r.ips, a.Unmap())
		}
	}
	data, _ := json.Marshal(obj)
	r.doc = string(data)
	return r
}

// heldRemote reads back the remote workloads a (restarted) agent holds.
func heldRemote(a *agent.Agent, self string) (map[string]*api.HostWorkload, map[string]remoteWorkload) {
	all := map[string]*api.HostWorkload{}
	remote := map[string]remoteWorkload{}
	for _, item := range a.Objects("Workload").Items {
		data, err := json.Marshal(item)
		if err != nil {
			continue
		}
		var o workloadObject
		if json.Unmarshal(data, &o) != nil || o.Spec.Host == "" || o.Spec.Host == self {
			continue
		}
		w := &api.HostWorkload{Host: o.Spec.Host, Namespace: o.Metadata.Namespace, Name: o.Metadata.Name,
			Labels: o.Metadata.Labels, IPs: o.Spec.IPs, Ports: o.Spec.Ports, HostIP: o.Metadata.Annotations[AnnotationHostIP]}
		all[workloadKey(w)] = w
		remote[w.Namespace+"/"+w.Name] = newRemote(w)
	}
	return all, remote
}

// pickRemote chooses the remote workloads the agent holds: every other
// host's, except where a name is taken twice. A workload's name is
// unique in its namespace across the cluster; when two hosts report the
// same one, the host first in name order wins, and a name registered on
// this host always wins. Conflicts are logged when they change.
func (f *Follower) pickRemote(all map[string]*api.HostWorkload) map[string]remoteWorkload {
	local := map[string]bool{}
	for _, r := range f.opts.Agent.Workloads() {
		local[r.Namespace+"/"+r.Name] = true
	}
	out := map[string]remoteWorkload{}
	var conflicts []string
	for _, k := range sortedKeys(all) {
		w := all[k]
		if w.Host == f.host {
			continue
		}
		nk := w.Namespace + "/" + w.Name
		if prev, taken := out[nk]; taken || local[nk] {
			by := "this host"
			if taken {
				by = "host " + prev.host
			}
			conflicts = append(conflicts, nk+" on host "+w.Host+" (kept: "+by+")")
			continue
		}
		out[nk] = newRemote(w)
	}
	if s := strings.Join(conflicts, "; "); s != f.conflicts {
		f.conflicts = s
		if s != "" {
			f.log.Warn("workload names reported by more than one host; only one is enforced on", "conflicts", s)
		}
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedRefs(put map[api.ObjectRef]json.RawMessage, del map[api.ObjectRef]bool) []api.ObjectRef {
	out := make([]api.ObjectRef, 0, len(put)+len(del))
	for r := range put {
		out = append(out, r)
	}
	for r := range del {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return refName(out[i]) < refName(out[j]) })
	return out
}

func refName(r api.ObjectRef) string {
	if r.Namespace != "" {
		return r.Kind + " " + r.Namespace + "/" + r.Name
	}
	return r.Kind + " " + r.Name
}
