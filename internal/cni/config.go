package cni

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent/client"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/runtimes"
)

// DefaultDataDir is where IPAM state lives unless dataDir says otherwise:
// one directory per network name.
const DefaultDataDir = "/var/lib/bulkhead/cni"

// Config is one network's plugin configuration, as the runtime passes it
// on stdin, with the args it carries.
type Config struct {
	CNIVersion  string
	Name        string
	AgentSocket string
	// Subnet and Subnet6 are the pools addresses come from; at least one
	// is valid.
	Subnet, Subnet6 netip.Prefix
	MTU             int
	DataDir         string
	DNS             types.DNS
	// PrevResult is the raw prevResult (CHECK, DEL, or a chain), nil when
	// absent.
	PrevResult map[string]any
	// ValidAttachments is cni.dev/valid-attachments (GC only).
	ValidAttachments []types.GCAttachment
	// LabelsFrom, when set, names the runtime whose API tells a
	// container's labels when args give none.
	LabelsFrom *LabelsFrom
	Args       Args
}

// Args is what args (and runtimeConfig) carry for one attachment.
type Args struct {
	Labels map[string]string
	// IPs are the requested addresses, at most one per family: those of
	// args.cni.ips and runtimeConfig.ips (and CNI_ARGS IP, added by
	// RequestIPs), which must agree.
	IPs []netip.Addr
	// ipFrom says where each of IPs was requested, for errors.
	ipFrom map[netip.Addr]string
	Ports  []api.NamedPort
}

// RequestIPs adds the addresses requested in source to c.Args.IPs: an
// address of a family already requested elsewhere must be the same one
// (else code conflict), and the network must have a subnet of its
// family (else code 100).
func (c *Config) RequestIPs(source string, ips []netip.Addr, conflict uint) error {
	var p problems
	c.requestIPs(&p, source, ips, conflict)
	c.checkFamilies(&p)
	return p.err()
}

func (c *Config) requestIPs(p *problems, source string, ips []netip.Addr, conflict uint) {
	if c.Args.ipFrom == nil {
		c.Args.ipFrom = map[netip.Addr]string{}
	}
	for _, a := range ips {
		i := slices.IndexFunc(c.Args.IPs, func(b netip.Addr) bool { return b.Is4() == a.Is4() })
		switch {
		case i < 0:
			c.Args.IPs = append(c.Args.IPs, a)
			c.Args.ipFrom[a] = source
		case c.Args.IPs[i] != a:
			have := c.Args.IPs[i]
			p.add(conflict, "%s %v and %s %v request different %s addresses; a workload has one address per family: request one",
				c.Args.ipFrom[have], have, source, a, family(a))
		}
	}
}

// checkFamilies refuses a requested address of a family the network
// has no subnet for.
func (c *Config) checkFamilies(p *problems) {
	for _, a := range c.Args.IPs {
		if !slices.ContainsFunc(c.Subnets(), func(s netip.Prefix) bool { return s.Addr().Is4() == a.Is4() }) {
			p.add(CodeAddressUnavailable, "%s: %v: this network has no %s subnet; configure %s or request another address",
				c.Args.ipFrom[a], a, family(a), map[bool]string{true: "subnet", false: "subnet6"}[a.Is4()])
		}
	}
}

// StateDir is the network's IPAM directory.
func (c *Config) StateDir() string { return filepath.Join(c.DataDir, c.Name) }

// Subnets lists the configured pools, IPv4 first.
func (c *Config) Subnets() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []netip.Prefix{c.Subnet, c.Subnet6} {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}

const validFields = "agentSocket, subnet, subnet6, mtu, dataDir, labelsFrom, and the CNI keys cniVersion, name, type, " +
	"capabilities, runtimeConfig, args, dns, prevResult"

// problems collects every problem of a configuration, so that one run
// reports them all. The error's code is the first problem's, or 2 when
// any key is unknown (most likely a misspelling, the cause of the rest).
type problems struct {
	code uint
	msgs []string
}

func (p *problems) add(code uint, format string, args ...any) {
	if len(p.msgs) == 0 || code == CodeUnsupportedField {
		p.code = code
	}
	p.msgs = append(p.msgs, fmt.Sprintf(format, args...))
}

func (p *problems) err() error {
	if len(p.msgs) == 0 {
		return nil
	}
	return types.NewError(p.code, codeMessage(p.code), strings.Join(p.msgs, "; "))
}

// ParseConfig reads a plugin configuration. Unknown keys are refused
// (code 2) naming the key and its value; invalid values (code 7) name the
// field and what would be valid.
func ParseConfig(data []byte) (*Config, error) { return parseConfig(data, false) }

// ParseDelConfig reads a configuration for DEL, checking only what DEL
// uses (name, dataDir, agentSocket): DEL must succeed for an attachment
// whose configuration ADD refused or that changed since, or a runtime
// that retries DEL stays stuck. Everything else is ignored.
func ParseDelConfig(data []byte) (*Config, error) { return parseConfig(data, true) }

// addOnly are the keys only ADD (and CHECK, GC) read.
var addOnly = map[string]bool{"runtimeConfig": true, "args": true, "prevResult": true, "dns": true, "ipam": true, "ipMasq": true,
	"plugins": true, "subnet": true, "subnet6": true, "mtu": true, "cni.dev/valid-attachments": true, "labelsFrom": true}

func parseConfig(data []byte, forDel bool) (*Config, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, cniError(types.ErrDecodingFailure, "network configuration on stdin: want one JSON object: %v", err)
	}
	c := &Config{AgentSocket: client.DefaultSocket, DataDir: DefaultDataDir}
	var p problems
	var argIPs, rtIPs []netip.Addr
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := raw[k]
		if forDel && (addOnly[k] || !knownKey(k)) {
			continue
		}
		switch k {
		case "cniVersion":
			decode(&p, k, v, &c.CNIVersion, `a version such as "1.1.0"`)
		case "name":
			// skel refuses a name with characters the spec does not allow
			// (such as '/': the name is a directory under dataDir).
			decode(&p, k, v, &c.Name, "a network name")
		case "type", "cniVersions", "capabilities":
			// type is the binary's name; the others are the runtime's.
		case "runtimeConfig":
			rtIPs = parseRuntimeConfig(&p, v)
		case "args":
			c.Args, argIPs = parseArgs(&p, v)
		case "prevResult":
			decode(&p, k, v, &c.PrevResult, "the previous plugin's result object")
		case "dns":
			decodeStrict(&p, k, v, &c.DNS, `{"nameservers": [...], "domain": "...", "search": [...], "options": [...]}`)
		case "ipam":
			if !isEmptyJSON(v) {
				p.add(CodeInvalidConfig, "ipam: bulkhead-cni allocates addresses itself from subnet and subnet6; remove ipam")
			}
		case "ipMasq":
			var b bool
			if decode(&p, k, v, &b, "false") && b {
				p.add(CodeInvalidConfig, "ipMasq: not supported: Bulkhead routes workload addresses and does not masquerade; remove ipMasq")
			}
		case "plugins":
			p.add(CodeInvalidConfig, "plugins: this is a network configuration list; give the plugin one element of plugins, with name and cniVersion added")
		case "agentSocket":
			if decode(&p, k, v, &c.AgentSocket, `a socket path such as "/run/bulkhead/agent.sock"`) {
				_, err := client.New(c.AgentSocket)
				if err != nil || !strings.HasPrefix(c.AgentSocket, "unix://") && !filepath.IsAbs(c.AgentSocket) {
					p.add(CodeInvalidConfig, "agentSocket %q: want an absolute socket path such as %q (or unix:///path)", c.AgentSocket, client.DefaultSocket)
				}
			}
		case "subnet":
			c.Subnet = parseSubnet(&p, k, v, false)
		case "subnet6":
			c.Subnet6 = parseSubnet(&p, k, v, true)
		case "mtu":
			decode(&p, k, v, &c.MTU, "a number from 68 to 65535")
		case "dataDir":
			if decode(&p, k, v, &c.DataDir, "an absolute directory path") && !filepath.IsAbs(c.DataDir) {
				p.add(CodeInvalidConfig, "dataDir %q: want an absolute directory path such as %q", c.DataDir, DefaultDataDir)
			}
		case "labelsFrom":
			c.LabelsFrom = parseLabelsFrom(&p, v)
		case "cni.dev/valid-attachments":
			decodeStrict(&p, k, v, &c.ValidAttachments, `a list of {"containerID": "...", "ifname": "..."}`)
		default:
			if strings.HasPrefix(k, "cni.dev/") {
				continue // reserved for runtimes; libcni also sends cni.dev/attachments
			}
			p.add(CodeUnsupportedField, "unknown field %q (value %s); valid fields: %s", k, short(v), validFields)
		}
	}
	c.requestIPs(&p, "args.cni.ips", argIPs, CodeInvalidConfig)
	c.requestIPs(&p, "runtimeConfig.ips", rtIPs, CodeInvalidConfig)
	if raw["name"] == nil {
		p.add(CodeInvalidConfig, `name: required: the network's name, such as "bulkhead"`)
	}
	if !forDel {
		c.validate(&p, raw["subnet"] != nil || raw["subnet6"] != nil)
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// knownKey reports whether k is a key the configuration may have.
func knownKey(k string) bool {
	switch k {
	case "cniVersion", "name", "type", "cniVersions", "capabilities", "agentSocket", "dataDir":
		return true
	}
	return addOnly[k] || strings.HasPrefix(k, "cni.dev/")
}

func (c *Config) validate(p *problems, subnetGiven bool) {
	if !subnetGiven {
		p.add(CodeInvalidConfig, `subnet: required: an IPv4 prefix such as "10.0.0.0/16" (or give subnet6 for IPv6 only)`)
	}
	switch {
	case c.MTU == 0:
	case c.MTU < 68 || c.MTU > 65535:
		p.add(CodeInvalidConfig, "mtu %d: want 68 to 65535 (or leave it out for 1500)", c.MTU)
	case c.Subnet6.IsValid() && c.MTU < 1280:
		p.add(CodeInvalidConfig, "mtu %d: IPv6 (subnet6) needs at least 1280", c.MTU)
	}
	c.checkFamilies(p)
}

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// decode reads v into out, reporting a wrong type as the field and what
// would be valid.
func decode(p *problems, field string, v json.RawMessage, out any, want string) bool {
	if err := json.Unmarshal(v, out); err != nil {
		p.add(CodeInvalidConfig, "%s: want %s, got %s", field, want, short(v))
		return false
	}
	return true
}

// decodeStrict is decode that also refuses unknown keys inside v.
func decodeStrict(p *problems, field string, v json.RawMessage, out any, want string) bool {
	d := json.NewDecoder(bytes.NewReader(v))
	d.DisallowUnknownFields()
	if err := d.Decode(out); err != nil {
		msg := err.Error()
		if f, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
			p.add(CodeUnsupportedField, "%s: unknown field %s; want %s", field, f, want)
		} else {
			p.add(CodeInvalidConfig, "%s: want %s, got %s", field, want, short(v))
		}
		return false
	}
	return true
}

func short(v json.RawMessage) string {
	s := string(bytes.TrimSpace(v))
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	return s
}

func isEmptyJSON(v json.RawMessage) bool {
	s := string(bytes.TrimSpace(v))
	return s == "null" || s == "{}" || s == `""`
}

func parseSubnet(p *problems, field string, v json.RawMessage, v6 bool) netip.Prefix {
	example, fam := "10.0.0.0/16", "an IPv4 prefix"
	if v6 {
		example, fam = "fd00:10::/64", "an IPv6 prefix"
	}
	var s string
	if !decode(p, field, v, &s, fmt.Sprintf("%s such as %q", fam, example)) {
		return netip.Prefix{}
	}
	pfx, err := netip.ParsePrefix(s)
	switch {
	case err != nil || pfx.Addr().Zone() != "":
		p.add(CodeInvalidConfig, "%s %q: want %s such as %q", field, s, fam, example)
	case pfx.Addr().Is4() == v6 || pfx.Addr().Is4In6():
		p.add(CodeInvalidConfig, "%s %q: want %s such as %q", field, s, fam, example)
	case pfx != pfx.Masked():
		p.add(CodeInvalidConfig, "%s %q has host bits set; want the network address, %v", field, s, pfx.Masked())
	case pfx.Bits() > pfx.Addr().BitLen()-2:
		p.add(CodeInvalidConfig, "%s %q leaves no address to allocate; want a prefix of at most /%d", field, s, pfx.Addr().BitLen()-2)
	default:
		return pfx
	}
	return netip.Prefix{}
}

func parseLabelsFrom(p *problems, v json.RawMessage) *LabelsFrom {
	var lf LabelsFrom
	before := len(p.msgs)
	if !decodeStrict(p, "labelsFrom", v, &lf, `{"runtime": "podman", "socket": "/run/podman/podman.sock"} or `+
		`{"runtime": "containerd", "socket": "/run/containerd/containerd.sock", "namespace": "default"}`) {
		return nil
	}
	var defaultSocket string
	switch lf.Runtime {
	case "podman":
		defaultSocket = runtimes.DefaultPodmanSocket
		if lf.Namespace != "" {
			p.add(CodeInvalidConfig, "labelsFrom.namespace %q: podman has no namespaces; it is for runtime \"containerd\"", lf.Namespace)
		}
	case "containerd":
		defaultSocket = runtimes.DefaultContainerdSocket
		if msg := runtimes.IdentifierProblem(lf.Namespace); lf.Namespace != "" && msg != "" {
			p.add(CodeInvalidConfig, "labelsFrom.namespace %q: %s (such as \"default\" for ctr, \"k8s.io\" for the CRI)", lf.Namespace, msg)
		}
	default:
		p.add(CodeInvalidConfig, `labelsFrom.runtime %q: want "podman" or "containerd"`, lf.Runtime)
		return nil
	}
	if lf.Socket == "" {
		lf.Socket = defaultSocket
	}
	if path := strings.TrimPrefix(lf.Socket, "unix://"); !filepath.IsAbs(path) {
		p.add(CodeInvalidConfig, "labelsFrom.socket %q: want an absolute socket path such as %q (or unix:///path)", lf.Socket, defaultSocket)
	}
	lf.wait = defaultRuntimeWait
	if lf.Timeout != "" {
		d, err := time.ParseDuration(lf.Timeout)
		if err != nil || d <= 0 || d > maxRuntimeWait {
			p.add(CodeInvalidConfig, "labelsFrom.timeout %q: want a duration above 0 and at most %v, such as \"10s\"", lf.Timeout, maxRuntimeWait)
		}
		lf.wait = d
	}
	if len(p.msgs) > before {
		return nil
	}
	return &lf
}

func parseRuntimeConfig(p *problems, v json.RawMessage) []netip.Addr {
	var rc map[string]json.RawMessage
	if !decode(p, "runtimeConfig", v, &rc, "an object") || rc["ips"] == nil {
		return nil
	}
	return parseIPs(p, "runtimeConfig.ips", rc["ips"])
}

// parseArgs reads args.cni (labels, ips) and args.bulkhead (ports). Other
// areas of args and other keys of args.cni belong to other plugins and
// are ignored, as the CNI conventions ask.
func parseArgs(p *problems, v json.RawMessage) (Args, []netip.Addr) {
	var a Args
	var areas struct {
		CNI      map[string]json.RawMessage `json:"cni"`
		Bulkhead json.RawMessage            `json:"bulkhead"`
	}
	if !decode(p, "args", v, &areas, `an object such as {"cni": {"labels": [...]}}`) {
		return a, nil
	}
	if l := areas.CNI["labels"]; l != nil {
		a.Labels = parseLabels(p, l)
	}
	var ips []netip.Addr
	if v := areas.CNI["ips"]; v != nil {
		ips = parseIPs(p, "args.cni.ips", v)
	}
	if areas.Bulkhead != nil {
		var b struct {
			Ports []api.NamedPort `json:"ports"`
		}
		if decodeStrict(p, "args.bulkhead", areas.Bulkhead, &b, `{"ports": [{"name": "http", "port": 80, "protocol": "tcp"}]}`) {
			a.Ports = parsePorts(p, b.Ports)
		}
	}
	return a, ips
}

func parseLabels(p *problems, v json.RawMessage) map[string]string {
	var list []struct {
		Key   *string `json:"key"`
		Value *string `json:"value"`
	}
	if !decodeStrict(p, "args.cni.labels", v, &list, `a list of {"key": "app", "value": "web"}`) {
		return nil
	}
	if msg := policy.LabelCountProblem(len(list)); msg != "" {
		p.add(CodeInvalidConfig, "args.cni.labels: %s", msg)
		return nil
	}
	out := make(map[string]string, len(list))
	for i, l := range list {
		at := fmt.Sprintf("args.cni.labels[%d]", i)
		switch {
		case l.Key == nil || l.Value == nil:
			p.add(CodeInvalidConfig, `%s: want both "key" and "value"`, at)
			continue
		case policy.LabelKeyProblem(*l.Key) != "":
			p.add(CodeInvalidConfig, "%s.key: %s", at, policy.LabelKeyProblem(*l.Key))
		case policy.LabelValueProblem(*l.Value) != "":
			p.add(CodeInvalidConfig, "%s.value: %s", at, policy.LabelValueProblem(*l.Value))
		}
		if _, dup := out[*l.Key]; dup {
			p.add(CodeInvalidConfig, "%s.key: %q given twice", at, *l.Key)
		}
		out[*l.Key] = *l.Value
	}
	return out
}

func parseIPs(p *problems, field string, v json.RawMessage) []netip.Addr {
	var list []string
	if !decode(p, field, v, &list, `a list of addresses such as ["10.0.0.5"] or ["10.0.0.5/16", "fd00:10::5"]`) {
		return nil
	}
	out := []netip.Addr{}
	for i, s := range list {
		a, ok := parseRequestedIP(s)
		if !ok {
			p.add(CodeInvalidConfig, "%s[%d] %q: want an address such as \"10.0.0.5\" or \"10.0.0.5/16\"", field, i, s)
			continue
		}
		if slices.ContainsFunc(out, func(b netip.Addr) bool { return b.Is4() == a.Is4() }) {
			p.add(CodeInvalidConfig, "%s[%d] %q: one address per family (IPv4, IPv6) at most", field, i, s)
			continue
		}
		out = append(out, a)
	}
	return out
}

// parseRequestedIP reads a requested address, with or without a prefix
// length (ignored: the workload always gets /32 or /128).
func parseRequestedIP(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		var pfx netip.Prefix
		pfx, err = netip.ParsePrefix(s)
		a = pfx.Addr()
	}
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// maxPorts is the agent's bound on the named ports of one workload.
const maxPorts = 64

func parsePorts(p *problems, ports []api.NamedPort) []api.NamedPort {
	if len(ports) > maxPorts {
		p.add(CodeInvalidConfig, "args.bulkhead.ports: %d named ports; a workload has at most %d", len(ports), maxPorts)
		return nil
	}
	seen := map[string]bool{}
	out := make([]api.NamedPort, 0, len(ports))
	for i, np := range ports {
		at := fmt.Sprintf("args.bulkhead.ports[%d]", i)
		// The policy's rules, as the agent checks them: an IANA service
		// name (a named port here is named, so that policies can say it).
		if msg := policy.PortNameProblem(np.Name); np.Name == "" || msg != "" {
			p.add(CodeInvalidConfig, "%s.name: %s", at, cmp.Or(msg, "a named port needs a name (an IANA service name, e.g. http)"))
		} else if seen[np.Name] {
			p.add(CodeInvalidConfig, "%s.name %q given twice", at, np.Name)
		}
		seen[np.Name] = true
		if msg := policy.PortProblem(np.Port); msg != "" {
			p.add(CodeInvalidConfig, "%s.port: %s", at, msg)
		}
		switch proto := strings.ToLower(np.Protocol); proto {
		case "":
			np.Protocol = "tcp"
		case "tcp", "udp", "sctp":
			np.Protocol = proto
		default:
			p.add(CodeInvalidConfig, "%s.protocol %q: want tcp, udp or sctp", at, np.Protocol)
		}
		out = append(out, np)
	}
	return out
}

// Workload is what CNI_ARGS gives an attachment: its identity, and the
// addresses it requests (IP, as `podman run --ip` sends it).
type Workload struct {
	Namespace, Name string
	// RuntimeName is the name the runtime gave (K8S_POD_NAME, or the
	// container id) when Name had to be normalised from it; empty when
	// Name is that name.
	RuntimeName string
	// NamespaceGiven says that CNI_ARGS named the namespace.
	NamespaceGiven bool
	IPs            []netip.Addr
}

// knownCNIArgs are the CNI_ARGS keys the plugin understands; the rest
// are refused unless IgnoreUnknown is set, as the CNI conventions have it.
var knownCNIArgs = []string{"IgnoreUnknown", "K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID", "IP"}

// ParseWorkload reads K8S_POD_NAMESPACE, K8S_POD_NAME and IP (requested
// addresses, separated by ',', at most one per family) from CNI_ARGS.
// Only ADD reads CNI_ARGS. Without the names the namespace is "default" and the name is the container
// id. A name that is not a valid workload name as given — Podman sends
// its container names as K8S_POD_NAME, and its generated names hold '_'
// (`frosty_pare`), chosen ones may hold upper case — is lowercased with
// '_' turned into '-', and the name as given is kept in RuntimeName.
// Two names that normalise alike are two registrations of one name: the
// agent refuses the second while the first is attached.
func ParseWorkload(cniArgs, containerID string) (Workload, error) {
	w := Workload{Namespace: "default"}
	var unknown []string
	ignoreUnknown := false
	for pair := range strings.SplitSeq(cniArgs, ";") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			return w, cniError(CodeInvalidEnv, "CNI_ARGS: %q is not KEY=VALUE; want pairs separated by ';', such as K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0", pair)
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			w.Namespace, w.NamespaceGiven = v, true
		case "K8S_POD_NAME":
			w.Name = v
		case "IgnoreUnknown":
			ignoreUnknown = v == "1" || strings.EqualFold(v, "true")
		case "IP":
			ips, err := parseCNIArgsIP(v)
			if err != nil {
				return w, err
			}
			w.IPs = append(w.IPs, ips...)
		case "K8S_POD_INFRA_CONTAINER_ID", "K8S_POD_UID":
		default:
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 && !ignoreUnknown {
		return w, cniError(CodeInvalidEnv, "CNI_ARGS: unknown keys %s; known: %s (add IgnoreUnknown=1 to pass others)",
			strings.Join(unknown, ", "), strings.Join(knownCNIArgs, ", "))
	}
	if len(w.IPs) > 2 || len(w.IPs) == 2 && w.IPs[0].Is4() == w.IPs[1].Is4() {
		return w, cniError(CodeInvalidEnv, "CNI_ARGS: IP %v: one address per family (IPv4, IPv6) at most", w.IPs)
	}
	// The policy's rules for names, as the agent checks them.
	if msg := policy.DNSLabelProblem(w.Namespace); msg != "" {
		return w, cniError(CodeInvalidEnv, "CNI_ARGS: K8S_POD_NAMESPACE: %s", msg)
	}
	if w.Name == "" {
		name, ok := normaliseName(containerID)
		if !ok {
			return w, cniError(CodeInvalidEnv, "CNI_CONTAINERID %q cannot serve as the workload's name (%s); pass K8S_POD_NAME in CNI_ARGS",
				containerID, policy.SubdomainProblem(name))
		}
		w.Name = name
	} else {
		name, ok := normaliseName(w.Name)
		if !ok {
			return w, cniError(CodeInvalidEnv, "CNI_ARGS: K8S_POD_NAME %q: %s (upper case and '_' are turned into lower case and '-'; nothing else is changed)",
				w.Name, policy.SubdomainProblem(name))
		}
		if name != w.Name {
			w.RuntimeName, w.Name = w.Name, name
		}
	}
	return w, nil
}

// normaliseName turns a runtime's container name or id into a workload
// name: lowercased, '_' turned into '-'. ok says whether the result is a
// valid name (policy.SubdomainProblem); nothing else is changed, so that
// no two unlike names are made alike beyond case and '_'.
func normaliseName(s string) (string, bool) {
	if policy.SubdomainProblem(s) == "" {
		return s, true
	}
	n := strings.ReplaceAll(strings.ToLower(s), "_", "-")
	return n, policy.SubdomainProblem(n) == ""
}

// parseCNIArgsIP reads CNI_ARGS IP: addresses separated by ',' (as the
// reference host-local plugin reads it), each with or without a prefix
// length.
func parseCNIArgsIP(v string) ([]netip.Addr, error) {
	var out []netip.Addr
	for item := range strings.SplitSeq(v, ",") {
		a, ok := parseRequestedIP(strings.TrimSpace(item))
		if !ok {
			return nil, cniError(CodeInvalidEnv, "CNI_ARGS: IP %q: want an address such as IP=10.0.0.5 (or IPv4 and IPv6 separated by ',', such as IP=10.0.0.5,fd00:10::5)", v)
		}
		out = append(out, a)
	}
	return out, nil
}
