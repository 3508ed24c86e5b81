package docker

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// State is what the driver must keep across its own restarts: Docker
// never replays CreateNetwork or RequestPool, so a network, a pool and an
// endpoint exist for the driver only if it wrote them down.
type State struct {
	Version   int                  `json:"version"`
	Pools     map[string]*Pool     `json:"pools"`
	Networks  map[string]*Network  `json:"networks"`
	Endpoints map[string]*Endpoint `json:"endpoints"`
}

// Pool is one IPAM pool: its prefix and the addresses handed out.
type Pool struct {
	Prefix    netip.Prefix `json:"prefix"`
	Allocated []netip.Addr `json:"allocated,omitempty"`
}

// Network is one Bulkhead network as Docker created it.
type Network struct {
	ID        string       `json:"id"`
	Prefix    netip.Prefix `json:"prefix"`
	Namespace string       `json:"namespace"`
}

// Endpoint is one container's attachment to a network.
type Endpoint struct {
	ID        string     `json:"id"`
	NetworkID string     `json:"networkID"`
	Addr      netip.Addr `json:"addr"`
	HostIf    string     `json:"hostIf"`
	Joined    bool       `json:"joined"`
	Namespace string     `json:"namespace"`
}

const stateVersion = 1

func newState() *State {
	return &State{Version: stateVersion, Pools: map[string]*Pool{}, Networks: map[string]*Network{}, Endpoints: map[string]*Endpoint{}}
}

// loadState reads the state file; a missing file is an empty state.
func loadState(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return newState(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("docker: read state: %w", err)
	}
	s := newState()
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("docker: state %s: %w", path, err)
	}
	if s.Version != stateVersion {
		return nil, fmt.Errorf("docker: state %s: version %d; this agent reads version %d", path, s.Version, stateVersion)
	}
	if s.Pools == nil {
		s.Pools = map[string]*Pool{}
	}
	if s.Networks == nil {
		s.Networks = map[string]*Network{}
	}
	if s.Endpoints == nil {
		s.Endpoints = map[string]*Endpoint{}
	}
	return s, nil
}

// save writes the state atomically (temporary file, fsync, rename).
func (s *State) save(path string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("docker: encode state: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("docker: state dir: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".docker-state-*")
	if err != nil {
		return fmt.Errorf("docker: write state: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("docker: write state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("docker: write state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("docker: write state: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("docker: write state: %w", err)
	}
	return nil
}

// clone deep-copies the state, so that a handler can change a copy and
// commit it only once it is saved: nothing half-created.
func (s *State) clone() *State {
	c := newState()
	for k, p := range s.Pools {
		cp := *p
		cp.Allocated = append([]netip.Addr(nil), p.Allocated...)
		c.Pools[k] = &cp
	}
	for k, n := range s.Networks {
		cn := *n
		c.Networks[k] = &cn
	}
	for k, e := range s.Endpoints {
		ce := *e
		c.Endpoints[k] = &ce
	}
	return c
}
