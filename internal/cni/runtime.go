package cni

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/runtimes"
)

// The label keys by which a container's runtime labels carry what is not
// a label of the workload (docs/cni.md, "Labels from the runtime").
const (
	// LabelNamespace is the workload's namespace.
	LabelNamespace = "bulkhead.dev/namespace"
	// LabelPorts is its named ports: NAME:PORT[/PROTOCOL], separated by
	// ',' (such as "pg:5432/tcp,metrics:9090").
	LabelPorts = "bulkhead.dev/ports"
)

// LabelsFrom is the configuration's labelsFrom: the runtime whose API
// tells a container's labels when args give none.
type LabelsFrom struct {
	// Runtime is "podman" or "containerd".
	Runtime string `json:"runtime"`
	// Socket is the runtime API's unix socket.
	Socket string `json:"socket"`
	// Namespace is containerd's namespace of the containers ("": read
	// it from ctr's NAMESPACE-ID).
	Namespace string `json:"namespace"`
	// Timeout bounds how long ADD waits for the labels, as a duration
	// ("10s"); wait is it parsed.
	Timeout string `json:"timeout"`
	wait    time.Duration
}

// defaultRuntimeWait is how long ADD waits for the runtime's answer
// unless labelsFrom.timeout says otherwise; maxRuntimeWait bounds that.
const (
	defaultRuntimeWait = 10 * time.Second
	maxRuntimeWait     = 2 * time.Minute
)

// source is the runtime API that lf names.
func (lf *LabelsFrom) source() runtimes.Source {
	if lf.Runtime == "containerd" {
		return runtimes.NewContainerd(lf.Socket, lf.Namespace)
	}
	return runtimes.NewPodman(lf.Socket)
}

// waitFor is how long ADD waits for the labels.
func (lf *LabelsFrom) waitFor() time.Duration { return cmp.Or(lf.wait, defaultRuntimeWait) }

// lookup asks src for the container until it answers, retrying while
// the runtime does not know the container yet or cannot be reached,
// for at most wait: ADD is held until the labels arrive, so that the
// workload's policy is in force before its first packet.
func lookup(ctx context.Context, src runtimes.Source, id string, wait time.Duration) (runtimes.Container, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	delay := 20 * time.Millisecond
	for {
		c, err := src.Container(ctx, id)
		if err == nil || !runtimes.IsNotFound(err) && !runtimes.IsUnavailable(err) {
			return c, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return c, fmt.Errorf("%w (still so after waiting %v)", err, wait)
		case <-t.C:
		}
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// fromRuntime completes w and at.conf.Args with what the runtime says
// about the container: its labels, its namespace (LabelNamespace) and
// named ports (LabelPorts). A container the runtime cannot tell about
// fails ADD before anything is created: a workload whose labels are not
// known has no identity a policy could allow, so it is never attached.
func (p *plugin) fromRuntime(at *attachment, src runtimes.Source, w *Workload, wait time.Duration) error {
	start := time.Now()
	c, err := lookup(p.ctx, src, at.containerID, wait)
	if err != nil {
		return cniError(CodeRuntime, "labels of container %s from %s: %v; the workload is not attached without them "+
			"(start the runtime's API service, or give the labels in args.cni.labels)", at.containerID, src, err)
	}
	id, err := identityFromLabels(c.Labels)
	if err != nil {
		return cniError(CodeRuntime, "labels of container %s (%q) from %s: %v", at.containerID, c.Name, src, err)
	}
	if id.namespace != "" {
		if w.NamespaceGiven && id.namespace != w.Namespace {
			return cniError(CodeRuntime, "container %s: label %s=%q and CNI_ARGS K8S_POD_NAMESPACE=%q disagree; give one",
				at.containerID, LabelNamespace, id.namespace, w.Namespace)
		}
		w.Namespace = id.namespace
	}
	if id.ports != nil {
		if at.conf.Args.Ports != nil {
			return cniError(CodeRuntime, "container %s: label %s and args.bulkhead.ports both give named ports; give one", at.containerID, LabelPorts)
		}
		at.conf.Args.Ports = id.ports
	}
	at.conf.Args.Labels = id.labels
	p.log.Info("labels from the runtime", "container", at.containerID, "runtimeNamespace", c.Namespace, "name", c.Name, "image", c.Image,
		"source", src.String(), "labels", len(id.labels), "namespace", w.Namespace, "took", time.Since(start).Round(time.Microsecond))
	return nil
}

// runtimeIdentity is what a container's runtime labels say.
type runtimeIdentity struct {
	namespace string
	labels    map[string]string
	ports     []api.NamedPort
}

// identityFromLabels reads a container's runtime labels by the
// conventions: LabelNamespace and LabelPorts are taken out, the rest are
// the workload's labels, by the policy's rules. Every problem is
// reported; none is dropped, since a label left out could leave the
// workload outside a policy meant to deny it.
func identityFromLabels(in map[string]string) (runtimeIdentity, error) {
	var p problems
	var id runtimeIdentity
	labels := maps.Clone(in)
	if labels == nil {
		labels = map[string]string{}
	}
	if ns, ok := labels[LabelNamespace]; ok {
		delete(labels, LabelNamespace)
		if msg := policy.DNSLabelProblem(ns); msg != "" {
			p.add(CodeRuntime, "label %s=%q: %s", LabelNamespace, ns, msg)
		}
		id.namespace = ns
	}
	if s, ok := labels[LabelPorts]; ok {
		delete(labels, LabelPorts)
		id.ports = parsePortsLabel(&p, s)
	}
	if msg := policy.LabelCountProblem(len(labels)); msg != "" {
		p.add(CodeRuntime, "%s", msg)
	} else {
		for _, k := range slices.Sorted(maps.Keys(labels)) {
			if msg := policy.LabelKeyProblem(k); msg != "" {
				p.add(CodeRuntime, "label key %q: %s", k, msg)
			} else if msg := policy.LabelValueProblem(labels[k]); msg != "" {
				p.add(CodeRuntime, "label %s=%q: %s", k, labels[k], msg)
			}
		}
	}
	id.labels = labels
	if len(p.msgs) > 0 {
		return id, errors.New(strings.Join(p.msgs, "; "))
	}
	return id, nil
}

// parsePortsLabel reads LabelPorts: NAME:PORT[/PROTOCOL], separated by ','.
func parsePortsLabel(p *problems, s string) []api.NamedPort {
	var ports []api.NamedPort
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		name, rest, ok := strings.Cut(item, ":")
		portStr, proto, _ := strings.Cut(rest, "/")
		port, err := strconv.ParseUint(portStr, 10, 16)
		if !ok || err != nil {
			p.add(CodeRuntime, "label %s: %q: want NAME:PORT[/PROTOCOL], such as pg:5432/tcp", LabelPorts, item)
			continue
		}
		ports = append(ports, api.NamedPort{Name: name, Port: int(port), Protocol: proto})
	}
	var q problems
	out := parsePorts(&q, ports)
	for _, m := range q.msgs {
		p.add(CodeRuntime, "label %s: %s", LabelPorts, strings.Replace(m, "args.bulkhead.ports", "ports", 1))
	}
	return out
}

func (lf *LabelsFrom) String() string { return fmt.Sprintf("%s at %s", lf.Runtime, lf.Socket) }
