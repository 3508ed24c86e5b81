package cni

import (
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
	Runtime string `json:"runtime"`
	Socket  string `json:"socket"`
}

// runtimeLookupTimeout bounds ADD's wait for the runtime's answer.
const runtimeLookupTimeout = 10 * time.Second

// source is the runtime API that lf names.
func (lf *LabelsFrom) source() runtimes.Source {
	return runtimes.NewPodman(lf.Socket)
}

// fromRuntime completes w and at.conf.Args with what the runtime says
// about the container: its labels, its namespace (LabelNamespace) and
// named ports (LabelPorts). A container the runtime cannot tell about
// fails ADD before anything is created: a workload whose labels are not
// known has no identity a policy could allow, so it is never attached.
func (p *plugin) fromRuntime(at *attachment, src runtimes.Source, w *Workload) error {
	ctx, cancel := context.WithTimeout(p.ctx, runtimeLookupTimeout)
	defer cancel()
	c, err := src.Container(ctx, at.containerID)
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
	p.log.Info("labels from the runtime", "container", at.containerID, "name", c.Name, "image", c.Image,
		"source", src.String(), "labels", len(id.labels), "namespace", w.Namespace)
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
