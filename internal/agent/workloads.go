package agent

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// Bounds of one registration beyond what objects.CheckWorkload checks
// (policy.MaxLabels labels), so that no caller can make the agent (and,
// through its reports, the manager) hold more for one workload; the body
// is bounded by maxRegistrationBody.
const (
	maxAddrs       = 16
	maxPorts       = 64
	maxContainerID = 256
	maxRuntimeName = 253
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
	switch {
	case len(r.IPs) == 0:
		errs = append(errs, "ips: a workload needs at least one address")
	case len(r.IPs) > maxAddrs:
		errs = append(errs, fmt.Sprintf("ips: %d addresses; a workload has at most %d", len(r.IPs), maxAddrs))
		r.IPs = nil
	}
	if len(r.Ports) > maxPorts {
		errs = append(errs, fmt.Sprintf("ports: %d named ports; a workload has at most %d", len(r.Ports), maxPorts))
		r.Ports = nil
	}
	if len(r.ContainerID) > maxContainerID {
		errs = append(errs, fmt.Sprintf("containerID: %d characters; at most %d", len(r.ContainerID), maxContainerID))
	}
	if len(r.RuntimeName) > maxRuntimeName || strings.IndexFunc(r.RuntimeName, unicode.IsControl) >= 0 {
		errs = append(errs, fmt.Sprintf("runtimeName: %q: at most %d characters, none of them control characters", r.RuntimeName, maxRuntimeName))
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
		a.RuntimeName != b.RuntimeName ||
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

// RegisterWorkload adds or updates a workload on this host and returns
// once its policy is enforced. A workload name belongs to one attachment
// (its host interface): a registration of the same namespace/name on
// another interface is refused while the first one's interface exists,
// so that a second container can neither take over the first one's
// identity nor, by its DEL, leave the first attached but unregistered.
// Once that interface is gone (the container's namespace was removed
// without a DEL), the new attachment takes the name.
func (a *Agent) RegisterWorkload(ctx context.Context, w api.WorkloadRegistration) (api.WorkloadRegistration, error) {
	m, errs := workload(w, a.host)
	if len(errs) > 0 {
		return api.WorkloadRegistration{}, newError(fault.Invalid, errs, "agent: register workload %s/%s: invalid", w.Namespace, w.Name)
	}
	key := m.Key()
	defer a.wlocks.lock(key)()
	old, had := a.registration(key)
	if had && old.Interface != w.Interface {
		if !a.attachmentGone(old) {
			return api.WorkloadRegistration{}, newError(fault.Conflict, nil,
				"agent: register workload %s: registered already on interface %s (container %q); one name, one attachment: "+
					"remove that one first (CNI DEL), or give this one another name", key, old.Interface, old.ContainerID)
		}
		a.log.Info("workload's earlier attachment is gone; its registration is replaced", "workload", key,
			"interface", old.Interface, "container", old.ContainerID, "newInterface", w.Interface, "newContainer", w.ContainerID)
	}
	if _, err := a.send(ctx, &request{op: opRegister, start: time.Now(), reg: &registration{api: w, w: m, key: key}}); err != nil {
		return api.WorkloadRegistration{}, err
	}
	switch {
	case !had:
		a.log.Info("workload registered", "workload", key, "ips", w.IPs, "interface", w.Interface, "container", w.ContainerID,
			"runtimeName", w.RuntimeName, "labels", len(w.Labels))
	case !sameRegistration(old, w):
		a.log.Info("workload updated", "workload", key, "ips", w.IPs, "interface", w.Interface, "container", w.ContainerID, "labels", len(w.Labels))
	}
	return w, nil
}

// UnregisterWorkload removes a workload of this host; removing one that
// is not registered is not an error.
func (a *Agent) UnregisterWorkload(ctx context.Context, namespace, name string) error {
	return a.UnregisterWorkloadOn(ctx, namespace, name, "")
}

// UnregisterWorkloadOn is UnregisterWorkload that leaves the workload
// alone unless it is registered on hostIf ("": any interface): a DEL
// removes only its own attachment's registration, whatever registered
// the name since it listed them.
func (a *Agent) UnregisterWorkloadOn(ctx context.Context, namespace, name, hostIf string) error {
	key := namespace + "/" + name
	defer a.wlocks.lock(key)()
	old, had := a.registration(key)
	if !had || hostIf != "" && old.Interface != hostIf {
		return nil
	}
	if _, err := a.send(ctx, &request{op: opUnregister, start: time.Now(), key: key}); err != nil {
		return err
	}
	a.log.Info("workload unregistered", "workload", key, "ips", old.IPs, "interface", old.Interface, "container", old.ContainerID)
	return nil
}

// interfaceChecker is a dataplane that can tell whether an interface
// exists where it enforces (nft.Dataplane).
type interfaceChecker interface {
	HasInterface(name string) (bool, error)
}

// attachmentGone reports whether r's host interface is known to be gone
// from the namespace the dataplane enforces in: its workload's namespace
// was removed without a CNI DEL (a killed container), so a new attachment
// may take the name. When the dataplane cannot tell, the attachment
// counts as live.
func (a *Agent) attachmentGone(r api.WorkloadRegistration) bool {
	c, ok := a.dp.(interfaceChecker)
	if !ok {
		return false
	}
	has, err := c.HasInterface(r.Interface)
	if err != nil {
		a.log.Warn("cannot tell whether a registered workload's interface exists; it counts as live", "interface", r.Interface, "err", err)
		return false
	}
	return !has
}

// registration is the registered workload key, as the snapshot in force
// holds it.
func (a *Agent) registration(key string) (api.WorkloadRegistration, bool) {
	regs := a.snap.Load().regs
	i := sort.Search(len(regs), func(i int) bool { return regs[i].key >= key })
	if i < len(regs) && regs[i].key == key {
		return regs[i].api, true
	}
	return api.WorkloadRegistration{}, false
}

// keyLocks serialises the registrations and unregistrations of one
// workload name, so that checking the registration in force and changing
// it are one step; different names proceed (and batch) concurrently.
// The zero value is ready to use.
type keyLocks struct {
	mu   sync.Mutex
	held map[string]*keyLock
}

type keyLock struct {
	mu      sync.Mutex
	waiters int
}

// lock takes key's lock and returns its release.
func (k *keyLocks) lock(key string) func() {
	k.mu.Lock()
	if k.held == nil {
		k.held = map[string]*keyLock{}
	}
	l := k.held[key]
	if l == nil {
		l = &keyLock{}
		k.held[key] = l
	}
	l.waiters++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		if l.waiters--; l.waiters == 0 {
			delete(k.held, key)
		}
		k.mu.Unlock()
	}
}

// namespaced is a dataplane that enforces in a kernel network namespace
// (nft.Dataplane); the userspace one enforces in none.
type namespaced interface {
	NetNS() (netns.ID, error)
}

// statusNetNS is the namespace the dataplane enforces in, for
// AgentStatus (nil: none, or it cannot be read).
func (a *Agent) statusNetNS() *api.NetNS {
	n, ok := a.dp.(namespaced)
	if !ok {
		return nil
	}
	id, err := n.NetNS()
	if err != nil {
		a.log.Warn("read the dataplane's network namespace", "err", err)
		return nil
	}
	return &api.NetNS{Dev: id.Dev, Ino: id.Ino}
}

// checkCallerNetNS refuses a registration from a caller that attaches
// workloads in another network namespace than the one the dataplane
// enforces in: there the workload's traffic never meets the policy, and
// registering it would report it enforced when it is not. The caller's
// namespace is its process's, by SO_PEERCRED: the CNI plugin makes its
// veths and routes in its own. A caller in the agent's own process (tests,
// `bulkhead up`) is trusted to have attached where the agent enforces:
// its threads may sit in other namespaces, which a pid cannot show.
func (a *Agent) checkCallerNetNS(p peer) error {
	n, ok := a.dp.(namespaced)
	if !ok || p.known && p.pid == os.Getpid() {
		return nil
	}
	want, err := n.NetNS()
	if err != nil {
		return newError(fault.Internal, nil, "agent: read the dataplane's network namespace: %v", err)
	}
	if !p.known || p.pid <= 0 {
		return newError(fault.Forbidden, nil, "agent: cannot learn the caller's network namespace: its pid is not visible to the agent "+
			"(the agent must share the host's pid namespace); refused, since the workload might not be enforced")
	}
	have, err := netns.IDOfPID(p.pid)
	if err != nil {
		return newError(fault.Forbidden, nil, "agent: read the caller's network namespace (pid %d): %v; refused, since the workload might not be enforced", p.pid, err)
	}
	if have != want {
		return newError(fault.Conflict, nil, "agent: the caller (pid %d) attaches workloads in network namespace %v, but this agent enforces in network namespace %v: "+
			"the workload's traffic would never meet the policy. Run the runtime (and so the CNI plugin) in the agent's namespace, or the agent in the runtime's (bulkhead agent --netns)",
			p.pid, have, want)
	}
	return nil
}
