package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeLinks records the veths the driver asks for.
type fakeLinks struct {
	mu   sync.Mutex
	live map[string]netip.Addr
	fail bool
}

func (f *fakeLinks) Create(hostIf, peer string, addr netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errFake
	}
	f.live[hostIf] = addr
	return nil
}

func (f *fakeLinks) Delete(hostIf string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.live, hostIf)
	return nil
}

type fakeErr string

func (e fakeErr) Error() string { return string(e) }

const errFake = fakeErr("fake failure")

// fakeEngine is the Docker Engine (Resolver) and the agent (Registrar).
type fakeEngine struct {
	mu         sync.Mutex
	ids        map[string]Identity // endpoint → container
	registered map[string]Identity
}

func (f *fakeEngine) Resolve(_ context.Context, _, endpointID string) (Identity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id, ok := f.ids[endpointID]
	if !ok {
		return Identity{}, fakeErr("not yet")
	}
	return id, nil
}

func (f *fakeEngine) Register(_ context.Context, ep Endpoint, id Identity) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registered[ep.ID] = id
	return nil
}

func (f *fakeEngine) Unregister(_ context.Context, ep Endpoint) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.registered, ep.ID)
	return nil
}

type bed struct {
	t      testing.TB
	dir    string
	links  *fakeLinks
	engine *fakeEngine
	d      *Driver
	srv    *httptest.Server
}

func newBed(t testing.TB) *bed {
	b := &bed{t: t, dir: t.TempDir(), links: &fakeLinks{live: map[string]netip.Addr{}},
		engine: &fakeEngine{ids: map[string]Identity{}, registered: map[string]Identity{}}}
	b.start()
	return b
}

func (b *bed) start() {
	d, err := New(Config{StateDir: b.dir, Links: b.links, Resolver: b.engine, Registrar: b.engine, ResolveTimeout: 5 * time.Second})
	if err != nil {
		b.t.Fatal(err)
	}
	b.d, b.srv = d, httptest.NewServer(d.Handler())
	b.t.Cleanup(func() { b.srv.Close(); d.Close() })
}

func (b *bed) restart() {
	b.srv.Close()
	b.d.Close()
	b.start()
}

// call posts body to the plugin endpoint and returns the status and the
// decoded answer.
func (b *bed) call(path, body string) (int, map[string]any) {
	b.t.Helper()
	resp, err := http.Post(b.srv.URL+"/"+path, contentType, strings.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	if err := json.Unmarshal(buf.Bytes(), &out); err != nil {
		b.t.Fatalf("%s: answer %q is not a JSON object: %v", path, buf.String(), err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != contentType {
		b.t.Errorf("%s: content type %q", path, ct)
	}
	return resp.StatusCode, out
}

func (b *bed) ok(path, body string) map[string]any {
	b.t.Helper()
	st, out := b.call(path, body)
	if st != http.StatusOK || out["Err"] != nil {
		b.t.Fatalf("%s %s: %d %v", path, body, st, out)
	}
	return out
}

// refused checks a libnetwork error that names what was wrong.
func (b *bed) refused(path, body, want string) {
	b.t.Helper()
	st, out := b.call(path, body)
	msg, _ := out["Err"].(string)
	if st == http.StatusOK || !strings.Contains(msg, want) {
		b.t.Errorf("%s %s: %d %v, want an Err naming %q", path, body, st, out, want)
	}
}

var (
	netID = strings.Repeat("a", 64)
	epID  = strings.Repeat("b", 64)
	ep2ID = strings.Repeat("c", 64)
)

// createNetwork plays Docker's calls for `docker network create -d
// bulkhead --ipam-driver bulkhead --subnet 10.77.0.0/24`.
func (b *bed) createNetwork() {
	b.t.Helper()
	if got := b.ok("Plugin.Activate", "")["Implements"]; len(got.([]any)) != 2 {
		b.t.Errorf("Activate: implements %v, want NetworkDriver and IpamDriver", got)
	}
	b.ok("NetworkDriver.GetCapabilities", "")
	b.ok("IpamDriver.GetCapabilities", "")
	b.ok("IpamDriver.GetDefaultAddressSpaces", "")
	pool := b.ok("IpamDriver.RequestPool", `{"AddressSpace":"bulkhead","Pool":"10.77.0.0/24","SubPool":"","Options":{},"V6":false}`)
	if pool["Pool"] != "10.77.0.0/24" {
		b.t.Fatalf("RequestPool: %v", pool)
	}
	gw := b.ok("IpamDriver.RequestAddress", `{"PoolID":"`+pool["PoolID"].(string)+`","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}`)
	b.ok("NetworkDriver.CreateNetwork", `{"NetworkID":"`+netID+`","Options":{"com.docker.network.generic":{"bulkhead.dev/namespace":"shop"}},"IPv4Data":[{"AddressSpace":"bulkhead","Pool":"10.77.0.0/24","Gateway":"`+gw["Address"].(string)+`"}],"IPv6Data":[]}`)
}

// A container's life as Docker drives it: address, endpoint, join (a
// veth, then the container identified in the background and
// registered), leave, delete — and the driver's state across its own
// restart, since Docker replays none of it.
func TestContainerLifecycle(t *testing.T) {
	b := newBed(t)
	b.createNetwork()
	poolID := "bulkhead/10.77.0.0/24"
	addr := b.ok("IpamDriver.RequestAddress", `{"PoolID":"`+poolID+`","Address":"","Options":{}}`)["Address"].(string)
	b.ok("NetworkDriver.CreateEndpoint", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","Interface":{"Address":"`+addr+`","AddressIPv6":"","MacAddress":""},"Options":{}}`)
	b.engine.mu.Lock()
	b.engine.ids[epID] = Identity{ContainerID: "c1", Name: "web", Labels: map[string]string{"app": "web"}}
	b.engine.mu.Unlock()
	join := b.ok("NetworkDriver.Join", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","SandboxKey":"/var/run/docker/netns/x","Options":{}}`)
	if join["Gateway"] == "" || join["InterfaceName"] == nil {
		t.Errorf("Join: %v", join)
	}
	if len(b.links.live) != 1 {
		t.Errorf("after Join: %d veths, want 1", len(b.links.live))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.engine.mu.Lock()
		id, ok := b.engine.registered[epID]
		b.engine.mu.Unlock()
		if ok {
			if id.Labels["app"] != "web" {
				t.Errorf("registered %+v", id)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the container was never registered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.refused("NetworkDriver.Join", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","SandboxKey":"x","Options":{}}`, "joined already")
	b.ok("NetworkDriver.ProgramExternalConnectivity", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","Options":{}}`)
	b.ok("NetworkDriver.EndpointOperInfo", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`"}`)

	// The agent restarts: networks, pools and endpoints are known again.
	b.restart()
	st := b.d.Snapshot()
	if len(st.Networks) != 1 || len(st.Endpoints) != 1 || !st.Endpoints[epID].Joined || st.Networks[netID].Namespace != "shop" {
		t.Fatalf("state after a restart: %+v", st)
	}
	ip, _, _ := strings.Cut(addr, "/") // Docker asks for and releases a plain address
	b.refused("IpamDriver.RequestAddress", `{"PoolID":"`+poolID+`","Address":"`+ip+`","Options":{}}`, "in use")

	b.ok("NetworkDriver.RevokeExternalConnectivity", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`"}`)
	b.ok("NetworkDriver.Leave", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`"}`)
	if len(b.links.live) != 0 {
		t.Errorf("after Leave: %d veths, want none", len(b.links.live))
	}
	b.refused("NetworkDriver.DeleteNetwork", `{"NetworkID":"`+netID+`"}`, "still has endpoint")
	b.ok("NetworkDriver.DeleteEndpoint", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`"}`)
	b.ok("IpamDriver.ReleaseAddress", `{"PoolID":"`+poolID+`","Address":"`+ip+`"}`)
	b.ok("NetworkDriver.DeleteNetwork", `{"NetworkID":"`+netID+`"}`)
	b.ok("IpamDriver.ReleasePool", `{"PoolID":"`+poolID+`"}`)
	if st := b.d.Snapshot(); len(st.Networks)+len(st.Endpoints)+len(st.Pools) != 0 {
		t.Errorf("state after teardown: %+v", st)
	}
}

// Bad requests get a libnetwork error that names what was wrong, and
// leave nothing behind.
func TestBadRequests(t *testing.T) {
	b := newBed(t)
	b.createNetwork()
	poolID := "bulkhead/10.77.0.0/24"
	for _, c := range []struct{ path, body, want string }{
		{"NetworkDriver.CreateNetwork", `{"NetworkID":`, "NetworkDriver.CreateNetwork"},
		{"NetworkDriver.CreateNetwork", `{"NetworkID":"` + netID + `","networkid":"x"}`, "NetworkDriver.CreateNetwork"},
		{"NetworkDriver.CreateEndpoint", `{"NetworkID":"` + netID + `","EndpointID":"` + epID + `","Interface":{"Address":"10.77.1.5/24"},"Options":{}}`, "outside"},
		{"NetworkDriver.CreateEndpoint", `{"NetworkID":"` + strings.Repeat("d", 64) + `","EndpointID":"` + epID + `","Interface":{"Address":"10.77.0.5/24"},"Options":{}}`, "not a Bulkhead network"},
		{"NetworkDriver.CreateEndpoint", `{"NetworkID":"../../etc","EndpointID":"` + epID + `","Interface":{"Address":"10.77.0.5/24"},"Options":{}}`, "NetworkID"},
		{"NetworkDriver.Join", `{"NetworkID":"` + netID + `","EndpointID":"` + ep2ID + `","SandboxKey":"x","Options":{}}`, "endpoint"},
		{"NetworkDriver.Leave", `{"NetworkID":"` + netID + `","EndpointID":"` + ep2ID + `"}`, "endpoint"},
		{"IpamDriver.RequestAddress", `{"PoolID":"` + poolID + `","Address":"10.99.0.1","Options":{}}`, "outside pool"},
		{"IpamDriver.RequestAddress", `{"PoolID":"bulkhead/10.1.0.0/24","Address":"","Options":{}}`, "no such pool"},
		{"IpamDriver.RequestPool", `{"AddressSpace":"bulkhead","Pool":"10.77.0.0/25","SubPool":"","Options":{},"V6":false}`, "10.77.0.0"},
		{"IpamDriver.RequestPool", `{"AddressSpace":"bulkhead","Pool":"","SubPool":"","Options":{},"V6":true}`, "IPv6"},
		{"IpamDriver.ReleaseAddress", `{"PoolID":"` + poolID + `","Address":"10.77.0.200"}`, "not allocated"},
	} {
		b.refused(c.path, c.body, c.want)
	}
	if st := b.d.Snapshot(); len(st.Endpoints) != 0 || len(b.links.live) != 0 {
		t.Errorf("refused requests left %+v and veths %v", st.Endpoints, b.links.live)
	}
	// A veth that cannot be made fails Join and leaves the endpoint unjoined.
	addr := b.ok("IpamDriver.RequestAddress", `{"PoolID":"`+poolID+`","Address":"","Options":{}}`)["Address"].(string)
	b.ok("NetworkDriver.CreateEndpoint", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","Interface":{"Address":"`+addr+`"},"Options":{}}`)
	b.links.fail = true
	b.refused("NetworkDriver.Join", `{"NetworkID":"`+netID+`","EndpointID":"`+epID+`","SandboxKey":"x","Options":{}}`, "attach")
	if b.d.Snapshot().Endpoints[epID].Joined {
		t.Error("a failed Join left the endpoint joined")
	}
}

// FuzzRequest: no body makes the driver panic, answer anything but a JSON
// object, or leave a veth behind.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{"", "{}", `{"NetworkID":"` + netID + `"}`, `{"PoolID":"bulkhead/10.77.0.0/24","Address":"10.77.0.9"}`,
		`{"NetworkID":"` + netID + `","EndpointID":"` + epID + `","Interface":{"Address":"10.77.0.9/24"}}`, "[1,2]", `{"Pool":"::/0","V6":true}`} {
		for i := range len(paths) {
			f.Add(i, s)
		}
	}
	b := newBed(f)
	b.createNetwork()
	f.Fuzz(func(t *testing.T, which int, body string) {
		if which < 0 {
			which = -which
		}
		b.t = t
		b.call(paths[which%len(paths)], body)
	})
}

var paths = []string{"Plugin.Activate", "NetworkDriver.GetCapabilities", "NetworkDriver.CreateNetwork", "NetworkDriver.DeleteNetwork",
	"NetworkDriver.CreateEndpoint", "NetworkDriver.EndpointOperInfo", "NetworkDriver.DeleteEndpoint", "NetworkDriver.Join",
	"NetworkDriver.Leave", "NetworkDriver.ProgramExternalConnectivity", "NetworkDriver.RevokeExternalConnectivity",
	"NetworkDriver.DiscoverNew", "NetworkDriver.DiscoverDelete", "IpamDriver.GetCapabilities", "IpamDriver.GetDefaultAddressSpaces",
	"IpamDriver.RequestPool", "IpamDriver.ReleasePool", "IpamDriver.RequestAddress", "IpamDriver.ReleaseAddress"}
