// Package cni is Bulkhead's CNI plugin (spec 1.1.0): ADD attaches a
// workload's network namespace to the host by a routed veth pair
// (internal/attach), with addresses from the network's own IPAM, and
// registers the workload with the local agent, returning only once the
// agent enforces the workload's policy. The workload's labels come from
// the network configuration's args or, with labelsFrom, from its
// runtime's API (internal/runtimes). DEL, CHECK, STATUS, GC and VERSION
// follow the spec, and results are in the configuration's cniVersion;
// docs/cni.md is the reference for users.
//
// The plugin runs in the host's network namespace, as runtimes call it.
// cmd/bulkhead-cni is its main.
package cni

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent/client"
	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// VersionInfo is the CNI versions the plugin speaks; STATUS and GC need
// a configuration of 1.1.0.
var VersionInfo = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

const about = "bulkhead-cni: attaches workloads to Bulkhead (CNI spec 1.1.0); see docs/cni.md"

// gcGrace is how long GC leaves an unfinished ADD's allocation alone.
const gcGrace = 5 * time.Minute

// Main runs one plugin command the way the CNI spec defines it
// (environment, stdin, stdout; errors as the spec's error JSON) and
// returns the exit code.
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p := &plugin{
		ctx:             ctx,
		log:             slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "bulkhead-cni"),
		registerTimeout: 60 * time.Second,
		agentTimeout:    10 * time.Second,
	}
	funcs := skel.CNIFuncs{Add: p.add, Del: p.del, Check: p.check, Status: p.status, GC: p.gc}
	if e := skel.PluginMainFuncsWithError(funcs, VersionInfo, about); e != nil {
		if err := e.Print(); err != nil {
			p.log.Error("write error JSON", "err", err)
		}
		return 1
	}
	return 0
}

type plugin struct {
	ctx context.Context
	log *slog.Logger
	// registerTimeout bounds ADD's wait for the agent to enforce the
	// workload; agentTimeout every other call to the agent.
	registerTimeout, agentTimeout time.Duration
}

// attachment is what every attachment-specific command derives first.
type attachment struct {
	conf                     *Config
	containerID, ifName, key string
	hostIf                   string
	agent                    *client.Client
	store                    *Store
}

func (p *plugin) setup(args *skel.CmdArgs) (*attachment, error) {
	return p.setupWith(args, ParseConfig)
}

func (p *plugin) setupWith(args *skel.CmdArgs, parse func([]byte) (*Config, error)) (*attachment, error) {
	conf, err := parse(args.StdinData)
	if err != nil {
		return nil, err
	}
	c, err := client.New(conf.AgentSocket)
	if err != nil {
		return nil, wrapError(CodeInvalidConfig, err)
	}
	return &attachment{
		conf:        conf,
		containerID: args.ContainerID,
		ifName:      args.IfName,
		key:         allocKey(args.ContainerID, args.IfName),
		hostIf:      attach.HostIfName(args.ContainerID + "/" + args.IfName),
		agent:       c,
		store:       &Store{Dir: conf.StateDir()},
	}, nil
}

func (p *plugin) add(args *skel.CmdArgs) error {
	at, err := p.setup(args)
	if err != nil {
		return err
	}
	if at.conf.PrevResult != nil {
		return cniError(CodeInvalidConfig, "prevResult: bulkhead-cni creates the interface, so it must be the first plugin of the list")
	}
	w, err := ParseWorkload(args.Args, args.ContainerID)
	if err != nil {
		return err
	}
	if err := at.conf.RequestIPs("CNI_ARGS IP", w.IPs, CodeInvalidEnv); err != nil {
		return err
	}
	if !w.NamespaceGiven {
		ns, err := at.store.KnownNamespace(args.ContainerID)
		if err != nil {
			return err
		}
		if ns != "" {
			w.Namespace = ns
			p.log.Info("namespace kept from an earlier ADD of the container", "container", args.ContainerID, "namespace", ns)
		}
	}
	if lf := at.conf.LabelsFrom; lf != nil && at.conf.Args.Labels == nil {
		if err := p.fromRuntime(at, lf.source(), &w, lf.waitFor()); err != nil {
			return err
		}
	}
	if err := checkNetNS(args.Netns); err != nil {
		return err
	}
	// Checked above, with the plugin's own namespace: skel's own check
	// after ADD would open CNI_NETNS again, blocking should it have been
	// replaced by a FIFO since.
	args.NetnsOverride = "1"
	p.flushPending(at.store, at.agent)
	elsewhere, err := p.preflight(at)
	if err != nil {
		return err
	}
	p.sweepGone(at, true)
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		p.sweepGone(at, false)
	}()
	defer func() { <-swept }()
	a, res, err := p.attach(at, args, w, elsewhere)
	if err != nil {
		return err
	}
	reg := api.WorkloadRegistration{Namespace: w.Namespace, Name: w.Name, Labels: at.conf.Args.Labels,
		IPs: addrStrings(a.IPs), Ports: at.conf.Args.Ports, Interface: at.hostIf, ContainerID: args.ContainerID,
		RuntimeName: w.RuntimeName}
	ctx, cancel := context.WithTimeout(p.ctx, p.registerTimeout)
	_, err = at.agent.RegisterWorkload(ctx, reg)
	cancel()
	if err != nil {
		p.undoRegistered(at, err)
		return agentError(at.agent.Socket(), "register workload "+w.Namespace+"/"+w.Name, err)
	}
	forgotten, err := at.store.Complete(at.key, w.NamespaceGiven)
	if err != nil {
		p.undoRegistered(at, nil)
		return err
	}
	if forgotten > 0 {
		p.log.Info("forgot the namespaces of the longest-gone containers", "count", forgotten, "kept", maxNamespaces)
	}
	p.log.Info("attached", "workload", w.Namespace+"/"+w.Name, "ips", a.IPs, "interface", at.hostIf)
	return types.PrintResult(buildResult(a, args, res, at.conf.DNS), at.conf.CNIVersion)
}

// maxAttachTries bounds how often ADD takes another address because the
// host routes the one it got already (a workload of another network with
// an overlapping subnet, attached while this ADD ran).
const maxAttachTries = 8

// attach reserves the addresses and makes the veth pair. An address the
// agent holds for another network's workload (given in elsewhere), or
// that the host routes already, is never taken over: another one is
// allocated, and a requested one fails with CodeAddressUnavailable.
func (p *plugin) attach(at *attachment, args *skel.CmdArgs, w Workload, elsewhere map[netip.Addr]string) (*Allocation, attach.Result, error) {
	for try := 1; ; try++ {
		a := &Allocation{ContainerID: args.ContainerID, IfName: args.IfName, HostIf: at.hostIf,
			Namespace: w.Namespace, Name: w.Name, Created: time.Now().UTC()}
		if err := at.store.ReserveAvoiding(a, at.conf.Args.IPs, at.conf.Subnets(), elsewhere); err != nil {
			return nil, attach.Result{}, err
		}
		res, err := attach.Add(attach.Spec{HostIf: at.hostIf, NetNS: args.Netns, IfName: args.IfName, Addrs: a.IPs, MTU: at.conf.MTU})
		if err == nil {
			return a, res, nil
		}
		p.release(at, false)
		switch {
		case !errors.Is(err, attach.ErrRouteExists):
			return nil, attach.Result{}, wrapError(CodeInterface, err)
		case len(at.conf.Args.IPs) > 0 || try == maxAttachTries:
			return nil, attach.Result{}, cniError(CodeAddressUnavailable, "%v; the address belongs to another workload on this host: request another, or none", err)
		}
		p.log.Info("the host routes an allocated address already; allocating another", "ips", a.IPs, "err", err)
		for _, ip := range a.IPs {
			elsewhere[ip] = "a route of the host"
		}
	}
}

// preflight asks the agent, before anything is created, whether the
// workload can be enforced from here — the agent enforces in the network
// namespace this plugin attaches in — and which addresses it holds for
// workloads of other attachments (networks whose subnets overlap this
// one share one agent, which knows every registered address).
func (p *plugin) preflight(at *attachment) (map[netip.Addr]string, error) {
	ctx, cancel := context.WithTimeout(p.ctx, p.agentTimeout)
	defer cancel()
	st, err := at.agent.Status(ctx)
	if err != nil {
		return nil, agentError(at.agent.Socket(), "ask the agent's status", err)
	}
	if msg := netnsProblem(at.agent.Socket(), st); msg != "" {
		return nil, cniError(CodeWrongNamespace, "%s", msg)
	}
	list, err := at.agent.Workloads(ctx)
	if err != nil {
		return nil, agentError(at.agent.Socket(), "list workloads", err)
	}
	elsewhere := map[netip.Addr]string{}
	for _, r := range list {
		if r.Interface == at.hostIf {
			continue
		}
		for _, s := range r.IPs {
			if ip, err := netip.ParseAddr(s); err == nil {
				elsewhere[ip.Unmap()] = fmt.Sprintf("workload %s/%s (interface %s, container %q), which the agent holds", r.Namespace, r.Name, r.Interface, r.ContainerID)
			}
		}
	}
	return elsewhere, nil
}

// netnsProblem says why the agent cannot enforce what this plugin
// attaches ("" when it can): it enforces in another network namespace
// than the plugin's own, where the plugin makes veths and routes.
func netnsProblem(socket string, st api.AgentStatus) string {
	if st.NetNS == nil {
		return "" // the agent enforces in no kernel namespace (userspace dataplane)
	}
	self, err := netns.Self()
	if err != nil {
		return fmt.Sprintf("cannot read the plugin's own network namespace: %v", err)
	}
	agentNS := netns.ID{Dev: st.NetNS.Dev, Ino: st.NetNS.Ino}
	if self == agentNS {
		return ""
	}
	return fmt.Sprintf("the agent at %s enforces in network namespace %v, but this plugin attaches workloads in network namespace %v "+
		"(the one the runtime runs it in): their traffic would never meet the policy. Run the agent in the runtime's namespace "+
		"(or with --netns naming it), or the runtime in the agent's", socket, agentNS, self)
}

// undoRegistered removes what a failed ADD made after the veth: the veth,
// any registration that reached the agent, and the allocation. When the
// agent may hold a registration that cannot be removed now, the
// addresses stay reserved (pending) instead of being freed.
func (p *plugin) undoRegistered(at *attachment, regErr error) {
	if err := attach.Del(at.hostIf); err != nil {
		p.log.Warn("undo ADD: remove veth", "interface", at.hostIf, "err", err)
	}
	if regErr != nil && neverReached(regErr) {
		p.release(at, false)
		return
	}
	// Undo even when a signal cancelled the ADD.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), p.agentTimeout)
	defer cancel()
	p.release(at, unregisterOwned(ctx, at.agent, map[string]bool{at.hostIf: true}) != nil)
}

// release frees the attachment's allocation, or keeps its addresses
// reserved until the agent has forgotten the workload.
func (p *plugin) release(at *attachment, pending bool) {
	var err error
	if pending {
		err = at.store.MarkPending(at.containerID, at.ifName, at.hostIf)
	} else {
		_, err = at.store.Release(at.key)
	}
	if err != nil {
		p.log.Warn("release addresses", "attachment", at.key, "err", err)
	}
}

func (p *plugin) del(args *skel.CmdArgs) error {
	at, err := p.setupWith(args, ParseDelConfig)
	if err != nil {
		return err
	}
	if args.Netns != "" {
		if _, err := netns.IDOf(args.Netns); err != nil {
			// Gone, or never a namespace: DEL has nothing to do there, and
			// skel must not open it after DEL (a FIFO would block).
			p.log.Info("DEL: CNI_NETNS is not a network namespace; nothing to remove there", "netns", args.Netns, "err", err)
			args.Netns = ""
		}
	}
	var errs []error
	// The veth first: once it is gone the workload can send nothing, and
	// its addresses stay allocated until the agent has forgotten it.
	if err := attach.Del(at.hostIf); err != nil {
		errs = append(errs, wrapError(CodeInterface, err))
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.agentTimeout)
	err = unregisterOwned(ctx, at.agent, map[string]bool{at.hostIf: true})
	cancel()
	if err != nil {
		p.log.Warn("the agent did not forget the workload: its addresses stay reserved until a later call reaches the agent",
			"attachment", at.key, "socket", at.agent.Socket(), "err", err)
		errs = append(errs, at.store.MarkPending(args.ContainerID, args.IfName, at.hostIf))
	} else {
		_, err := at.store.Release(at.key)
		errs = append(errs, err)
		p.flushPending(at.store, at.agent)
	}
	return firstError(errs)
}

func firstError(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// checkNetNS refuses a CNI_NETNS that is not a network namespace (without
// blocking: a FIFO is refused by its type, never opened for reading) or
// is the plugin's own namespace, before anything is created (skel checks
// the latter only after ADD has run).
func checkNetNS(path string) error {
	target, err := netns.IDOf(path)
	if err != nil {
		return cniError(CodeInvalidEnv, "CNI_NETNS %q: %v; want the workload's network namespace, such as /run/netns/NAME or /proc/PID/ns/net", path, err)
	}
	self, err := netns.Self()
	if err != nil {
		return cniError(CodeInvalidEnv, "CNI_NETNS %q: read the plugin's own namespace: %v", path, err)
	}
	if self == target {
		return cniError(CodeInvalidEnv, "CNI_NETNS %q is the plugin's own (host) namespace; give the workload's", path)
	}
	return nil
}

func addrStrings(ips []netip.Addr) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

// sameAddrs reports whether a and b hold the same addresses in any order.
func sameAddrs(a, b []netip.Addr) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.SortFunc(x, netip.Addr.Compare)
	slices.SortFunc(y, netip.Addr.Compare)
	return slices.Equal(x, y)
}
