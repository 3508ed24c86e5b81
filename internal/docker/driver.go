// Package docker is Bulkhead's Docker remote network driver and IPAM
// driver: the ~20 JSON endpoints of libnetwork's plugin protocol, served
// on a unix socket (/run/docker/plugins/bulkhead.sock), with routed veths
// like the CNI path and state kept on disk because Docker replays neither
// CreateNetwork nor RequestPool. docs/docker.md describes the design.
//
// A container's identity (its labels) never reaches a driver; the driver
// asks a Resolver after Join, in the background, and registers the
// workload only once it knows it. Until then the container's address is
// routed but belongs to no workload, which the dataplane drops as an
// unknown source: fail closed.
package docker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/strict"
)

// Name is the driver's name (`docker network create -d bulkhead`).
const Name = "bulkhead"

// NamespaceOption names the network option (`-o bulkhead.dev/namespace=x`)
// and the container label that choose a workload's namespace, as for CNI.
const NamespaceOption = "bulkhead.dev/namespace"

const (
	contentType  = "application/vnd.docker.plugins.v1.x+json"
	maxBody      = 1 << 20
	addressSpace = "bulkhead"
	genericOpts  = "com.docker.network.generic"
)

// Identity is what the Docker Engine knows of the container behind an
// endpoint.
type Identity struct {
	ContainerID string
	Name        string
	Labels      map[string]string
}

// Resolver finds the container behind an endpoint. It may fail while
// Docker has not yet recorded the endpoint; the driver retries.
type Resolver interface {
	Resolve(ctx context.Context, networkID, endpointID string) (Identity, error)
}

// Registrar registers and removes workloads; the agent is one.
type Registrar interface {
	Register(ctx context.Context, ep Endpoint, id Identity) error
	Unregister(ctx context.Context, ep Endpoint) error
}

// Links creates and removes the host side of a routed veth. Create makes
// the pair in the host's namespace, hostIf configured and routing addr,
// peer left for Docker to move into the container. Delete of a missing
// interface is not an error.
type Links interface {
	Create(hostIf, peer string, addr netip.Addr) error
	Delete(hostIf string) error
}

// Config configures a Driver.
type Config struct {
	StateDir  string // where docker-state.json lives
	Links     Links
	Resolver  Resolver  // nil: endpoints are never identified (held)
	Registrar Registrar // nil: nothing is registered
	Log       *slog.Logger
	// ResolveTimeout bounds the background identification of one
	// endpoint (default 30s).
	ResolveTimeout time.Duration
}

// Driver serves the protocol. Its methods are safe for concurrent use.
type Driver struct {
	cfg   Config
	path  string
	log   *slog.Logger
	mu    sync.Mutex
	state *State
	wg    sync.WaitGroup
	ctx   context.Context
	stop  context.CancelFunc
}

// New loads the driver's state from cfg.StateDir.
func New(cfg Config) (*Driver, error) {
	if cfg.Links == nil {
		return nil, errors.New("docker: no Links given")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.ResolveTimeout == 0 {
		cfg.ResolveTimeout = 30 * time.Second
	}
	path := filepath.Join(cfg.StateDir, "docker-state.json")
	s, err := loadState(path)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Driver{cfg: cfg, path: path, log: cfg.Log.With("component", "docker"), state: s, ctx: ctx, stop: stop}, nil
}

// Close stops background identification and waits for it.
func (d *Driver) Close() {
	d.stop()
	d.wg.Wait()
}

// Snapshot returns a copy of the driver's state.
func (d *Driver) Snapshot() *State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state.clone()
}

// Handler serves the plugin protocol.
func (d *Driver) Handler() http.Handler {
	mux := http.NewServeMux()
	routes := map[string]func([]byte) (any, error){
		"/Plugin.Activate":                           d.activate,
		"/NetworkDriver.GetCapabilities":             d.capabilities,
		"/NetworkDriver.CreateNetwork":               d.createNetwork,
		"/NetworkDriver.DeleteNetwork":               d.deleteNetwork,
		"/NetworkDriver.CreateEndpoint":              d.createEndpoint,
		"/NetworkDriver.EndpointOperInfo":            d.endpointOperInfo,
		"/NetworkDriver.DeleteEndpoint":              d.deleteEndpoint,
		"/NetworkDriver.Join":                        d.join,
		"/NetworkDriver.Leave":                       d.leave,
		"/NetworkDriver.ProgramExternalConnectivity": d.programConnectivity,
		"/NetworkDriver.RevokeExternalConnectivity":  d.revokeConnectivity,
		"/NetworkDriver.DiscoverNew":                 d.discover,
		"/NetworkDriver.DiscoverDelete":              d.discover,
		"/IpamDriver.GetCapabilities":                d.ipamCapabilities,
		"/IpamDriver.GetDefaultAddressSpaces":        d.addressSpaces,
		"/IpamDriver.RequestPool":                    d.requestPool,
		"/IpamDriver.ReleasePool":                    d.releasePool,
		"/IpamDriver.RequestAddress":                 d.requestAddress,
		"/IpamDriver.ReleaseAddress":                 d.releaseAddress,
	}
	for path, fn := range routes {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
			switch {
			case err != nil:
				err = fault.New(fault.BadRequest, nil, "%s: read body: %v", path[1:], err)
			case len(body) > maxBody:
				err = fault.New(fault.TooLarge, nil, "%s: body over %d bytes", path[1:], maxBody)
			}
			var out any
			if err == nil {
				out, err = d.call(path[1:], fn, body)
			}
			w.Header().Set("Content-Type", contentType)
			if err != nil {
				d.log.Warn("plugin request refused", "call", path[1:], "err", err)
				w.WriteHeader(fault.HTTPStatus(err))
				out = errResponse{Err: err.Error()}
			}
			b, _ := strict.Encode(out)
			_, _ = w.Write(b)
		})
	}
	return mux
}

// call runs one handler and turns a panic into an internal error: a
// driver bug must not take the agent down with it.
func (d *Driver) call(name string, fn func([]byte) (any, error), body []byte) (out any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fault.New(fault.Internal, nil, "%s: internal error: %v", name, p)
		}
	}()
	out, err = fn(body)
	if err != nil && fault.KindOf(err) == nil {
		err = fault.New(fault.Internal, nil, "%s: %v", name, err)
	}
	return out, err
}

// decode reads body strictly into v; Docker sends an empty body (or
// "{}") for calls without arguments, which decodeOptional takes.
func decode(call string, body []byte, v any) error {
	if err := strict.JSON(body, v); err != nil {
		return fault.New(fault.BadRequest, nil, "%s: request: %v", call, err)
	}
	return nil
}

func decodeOptional(call string, body []byte, v any) error {
	if len(body) == 0 {
		return nil
	}
	return decode(call, body, v)
}

// An id is what Docker sends for networks and endpoints: 64 hex digits.
var idPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

func checkID(call, field, id string) error {
	if !idPattern.MatchString(id) {
		return fault.New(fault.Invalid, nil, "%s: %s %q: want Docker's id, 64 lowercase hex digits", call, field, id)
	}
	return nil
}

// commit saves next and makes it the state; on error the state is left
// as it was.
func (d *Driver) commit(call string, next *State) error {
	if err := next.save(d.path); err != nil {
		return fault.New(fault.Unavailable, nil, "%s: %v", call, err)
	}
	d.state = next
	return nil
}

func (d *Driver) activate([]byte) (any, error) {
	return activateResponse{Implements: []string{"NetworkDriver", "IpamDriver"}}, nil
}

func (d *Driver) capabilities([]byte) (any, error) {
	return capabilitiesResponse{Scope: "local", ConnectivityScope: "local"}, nil
}

func (d *Driver) discover(body []byte) (any, error) {
	var req discoveryRequest
	if err := decodeOptional("NetworkDriver.Discover", body, &req); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

func (d *Driver) programConnectivity(body []byte) (any, error) {
	return d.connectivity("NetworkDriver.ProgramExternalConnectivity", body)
}

func (d *Driver) revokeConnectivity(body []byte) (any, error) {
	return d.connectivity("NetworkDriver.RevokeExternalConnectivity", body)
}

// connectivity answers Program/RevokeExternalConnectivity: published
// ports are Docker's own DNAT in the host's nat table, after which the
// packets cross the forward path where the policy meets them as traffic
// from outside; the driver has nothing to program.
func (d *Driver) connectivity(call string, body []byte) (any, error) {
	var req programConnectivityRequest
	if err := decode(call, body, &req); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.endpoint(call, req.NetworkID, req.EndpointID); err != nil && call != "NetworkDriver.RevokeExternalConnectivity" {
		return nil, err
	}
	return struct{}{}, nil
}

func (d *Driver) endpointOperInfo(body []byte) (any, error) {
	const call = "NetworkDriver.EndpointOperInfo"
	var req endpointRequest
	if err := decode(call, body, &req); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ep, err := d.endpoint(call, req.NetworkID, req.EndpointID)
	if err != nil {
		return nil, err
	}
	return struct{ Value map[string]string }{map[string]string{"hostInterface": ep.HostIf, "address": ep.Addr.String()}}, nil
}

// endpoint finds an endpoint of a network; d.mu is held.
func (d *Driver) endpoint(call, networkID, endpointID string) (*Endpoint, error) {
	if err := checkID(call, "NetworkID", networkID); err != nil {
		return nil, err
	}
	if err := checkID(call, "EndpointID", endpointID); err != nil {
		return nil, err
	}
	if _, ok := d.state.Networks[networkID]; !ok {
		return nil, fault.New(fault.NotFound, nil, "%s: network %s is not a Bulkhead network this agent knows", call, networkID)
	}
	ep, ok := d.state.Endpoints[endpointID]
	if !ok || ep.NetworkID != networkID {
		return nil, fault.New(fault.NotFound, nil, "%s: endpoint %s: no such endpoint on network %s", call, endpointID, networkID)
	}
	return ep, nil
}

// namespaceOf reads the namespace option from a network's options.
func namespaceOf(call string, opts map[string]any) (string, error) {
	g, ok := opts[genericOpts].(map[string]any)
	if !ok {
		return "", nil
	}
	v, ok := g[NamespaceOption]
	if !ok {
		return "", nil
	}
	s, ok := v.(string)
	if !ok || !dnsLabel.MatchString(s) {
		return "", fault.New(fault.Invalid, nil, "%s: option %s %v: want a DNS label (lowercase letters, digits, '-', at most 63)", call, NamespaceOption, v)
	}
	return s, nil
}

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// peerOf names the container side of an endpoint's veth, which Docker
// moves into the container and renames eth*.
func peerOf(hostIf string) string { return "bt" + hostIf[2:] }

// Gateway is what a container routes through: the link-local address
// that the host side answers by proxy ARP, as in the CNI path.
var Gateway = attach.Gateway4
