package cni

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The IPAM state of one network lives in its own directory,
// DATADIR/NETWORK/:
//
//	lock        empty; every plugin process takes flock(LOCK_EX) on it
//	            around each read-modify-write
//	state.json  the State, replaced atomically (temporary file, fsync,
//	            rename, fsync of the directory)
//
// The lock is held only while the state is read and written, never while
// the plugin creates interfaces or waits for the agent, so concurrent ADDs
// run in parallel apart from a few milliseconds each.

// State is the content of state.json.
type State struct {
	Version int `json:"version"`
	// Last is the last address handed out per family ("4", "6"): the next
	// allocation starts after it, so a freed address is not reused at once.
	Last map[string]netip.Addr `json:"last,omitempty"`
	// Allocations are keyed by "CONTAINERID/IFNAME".
	Allocations map[string]*Allocation `json:"allocations"`
	// Pending are attachments DEL removed while the agent was unreachable:
	// their addresses stay reserved until the agent has forgotten the
	// workload, so that no new workload inherits a stale identity.
	Pending []*Allocation `json:"pending,omitempty"`
	// Namespaces are the namespaces runtimes named (CNI_ARGS
	// K8S_POD_NAMESPACE) in the ADDs of their containers, by container
	// id: a later ADD of the same container without one (Podman's
	// restart) keeps it. At most maxNamespaces; the oldest go first.
	Namespaces map[string]*KnownNamespace `json:"namespaces,omitempty"`
}

// KnownNamespace is the namespace a container's runtime last named.
type KnownNamespace struct {
	Namespace string    `json:"namespace"`
	Seen      time.Time `json:"seen"`
}

// maxNamespaces bounds State.Namespaces: far more containers than one
// network on one host attaches at a time, so that only containers long
// gone are forgotten.
const maxNamespaces = 4096

// Allocation is the addresses of one attachment and what the plugin
// registered for it.
type Allocation struct {
	ContainerID string       `json:"containerID"`
	IfName      string       `json:"ifname"`
	IPs         []netip.Addr `json:"ips"`
	HostIf      string       `json:"hostIf"`
	Namespace   string       `json:"namespace,omitempty"`
	Name        string       `json:"name,omitempty"`
	Created     time.Time    `json:"created"`
	// Complete is set once ADD has registered the workload. GC leaves an
	// incomplete allocation younger than gcGrace alone: an ADD in flight.
	Complete bool `json:"complete"`
}

// Key is the allocation's key in State.Allocations.
func (a *Allocation) Key() string { return allocKey(a.ContainerID, a.IfName) }

func allocKey(containerID, ifName string) string { return containerID + "/" + ifName }

const stateVersion = 1

// Store is one network's IPAM state on disk. Its methods are safe for
// concurrent use by many processes (and goroutines, each with its own
// file descriptor).
type Store struct {
	Dir string
	// LockTimeout bounds the wait for the lock; 0 means 30 s.
	LockTimeout time.Duration
}

func (s *Store) statePath() string { return filepath.Join(s.Dir, "state.json") }

// lock takes the network's lock (exclusive, or shared for reading) and
// returns its release.
func (s *Store) lock(exclusive bool) (func(), error) {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, cniError(CodeState, "ipam: create state directory %s: %v", s.Dir, err)
	}
	f, err := os.OpenFile(filepath.Join(s.Dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, cniError(CodeState, "ipam: open lock %s: %v", s.Dir, err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	timeout := s.LockTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	deadline := time.Now().Add(timeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 20*time.Millisecond) {
		err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, cniError(CodeState, "ipam: lock %s: %v", f.Name(), err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, cniError(CodeTryAgainLater, "ipam: lock %s: still held by another plugin process after %v", f.Name(), timeout)
		}
		time.Sleep(wait)
	}
}

func (s *Store) load() (*State, error) {
	st := &State{Version: stateVersion, Allocations: map[string]*Allocation{}}
	data, err := os.ReadFile(s.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, cniError(CodeState, "ipam: read %s: %v", s.statePath(), err)
	}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, cniError(CodeState, "ipam: %s is not valid state (%v); restore it from a backup, "+
			"or remove it once no container uses this network", s.statePath(), err)
	}
	if st.Version != stateVersion {
		return nil, cniError(CodeState, "ipam: %s has version %d; this plugin reads version %d", s.statePath(), st.Version, stateVersion)
	}
	if st.Allocations == nil {
		st.Allocations = map[string]*Allocation{}
	}
	return st, nil
}

func (s *Store) save(st *State) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return cniError(CodeState, "ipam: encode state: %v", err)
	}
	f, err := os.CreateTemp(s.Dir, "state.json.tmp-*")
	if err != nil {
		return cniError(CodeState, "ipam: write state in %s: %v", s.Dir, err)
	}
	_, werr := f.Write(append(data, '\n'))
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(f.Name())
		return cniError(CodeState, "ipam: write %s: %v", f.Name(), err)
	}
	if err := os.Rename(f.Name(), s.statePath()); err != nil {
		os.Remove(f.Name())
		return cniError(CodeState, "ipam: replace %s: %v", s.statePath(), err)
	}
	if d, err := os.Open(s.Dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Update runs fn on the state under the exclusive lock and saves the
// result when fn succeeds and reports a change.
func (s *Store) Update(fn func(*State) (changed bool, err error)) error {
	unlock, err := s.lock(true)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := s.load()
	if err != nil {
		return err
	}
	changed, err := fn(st)
	if err != nil || !changed {
		return err
	}
	return s.save(st)
}

// Read returns the state, read under a shared lock.
func (s *Store) Read() (*State, error) {
	if _, err := os.Stat(s.Dir); errors.Is(err, os.ErrNotExist) {
		// Nothing was ever written: reading leaves no trace either.
		return &State{Version: stateVersion, Allocations: map[string]*Allocation{}}, nil
	}
	unlock, err := s.lock(false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	return s.load()
}

// Reserve records a for its key with the requested addresses, and one
// allocated from each subnet whose family was not requested.
func (s *Store) Reserve(a *Allocation, requested []netip.Addr, subnets []netip.Prefix) error {
	return s.ReserveAvoiding(a, requested, subnets, nil)
}

// ReserveAvoiding is Reserve that also treats the addresses of elsewhere
// as taken: those the agent holds for workloads of other networks (which
// may share this network's subnet), each with who holds it.
func (s *Store) ReserveAvoiding(a *Allocation, requested []netip.Addr, subnets []netip.Prefix, elsewhere map[netip.Addr]string) error {
	return s.Update(func(st *State) (bool, error) {
		if prev, ok := st.Allocations[a.Key()]; ok {
			return false, cniError(CodeAlreadyAttached, "container %s interface %s is attached already (addresses %v, host interface %s); DEL it first",
				a.ContainerID, a.IfName, prev.IPs, prev.HostIf)
		}
		if slices.ContainsFunc(st.Pending, func(p *Allocation) bool { return p.Key() == a.Key() }) {
			return false, cniError(CodeTryAgainLater, "container %s interface %s was removed while the agent was unreachable; "+
				"its unregistration is still pending", a.ContainerID, a.IfName)
		}
		used := st.used()
		for ip, who := range elsewhere {
			if _, ours := used[ip]; !ours {
				used[ip] = holder{elsewhere: who}
			}
		}
		for _, sub := range subnets {
			i := slices.IndexFunc(requested, func(r netip.Addr) bool { return r.Is4() == sub.Addr().Is4() })
			if i >= 0 {
				if err := checkRequested(requested[i], sub, used); err != nil {
					return false, err
				}
				a.IPs = append(a.IPs, requested[i])
				continue
			}
			ip, err := st.next(sub, used)
			if err != nil {
				return false, err
			}
			a.IPs = append(a.IPs, ip)
		}
		for _, ip := range a.IPs {
			if st.Last == nil {
				st.Last = map[string]netip.Addr{}
			}
			st.Last[famKey(ip)] = ip
		}
		st.Allocations[a.Key()] = a
		return true, nil
	})
}

func famKey(a netip.Addr) string {
	if a.Is4() {
		return "4"
	}
	return "6"
}

// holder is who holds an address: an allocation, a pending removal, or
// a workload of another network that the agent holds.
type holder struct {
	a         *Allocation
	pending   bool
	elsewhere string
}

func (h holder) taken() bool { return h.a != nil || h.elsewhere != "" }

func (h holder) String() string {
	if h.elsewhere != "" {
		return h.elsewhere
	}
	if h.pending {
		return fmt.Sprintf("removed container %s, whose unregistration at the agent is pending", h.a.ContainerID)
	}
	return fmt.Sprintf("container %s interface %s (workload %s/%s)", h.a.ContainerID, h.a.IfName, h.a.Namespace, h.a.Name)
}

// used maps every reserved address to its holder.
func (st *State) used() map[netip.Addr]holder {
	used := map[netip.Addr]holder{}
	for _, a := range st.Allocations {
		for _, ip := range a.IPs {
			used[ip] = holder{a: a}
		}
	}
	for _, a := range st.Pending {
		for _, ip := range a.IPs {
			used[ip] = holder{a: a, pending: true}
		}
	}
	return used
}

func checkRequested(ip netip.Addr, sub netip.Prefix, used map[netip.Addr]holder) error {
	switch {
	case !sub.Contains(ip):
		return cniError(CodeAddressUnavailable, "requested address %v is outside subnet %v; request one inside it, or none to have one allocated", ip, sub)
	case ip == sub.Addr() && ip.Is4():
		return cniError(CodeAddressUnavailable, "requested address %v is the network address of subnet %v; request another", ip, sub)
	case ip == sub.Addr():
		return cniError(CodeAddressUnavailable, "requested address %v is the subnet-router anycast address of subnet %v; request another", ip, sub)
	case ip == broadcast(sub):
		return cniError(CodeAddressUnavailable, "requested address %v is the broadcast address of subnet %v; request another", ip, sub)
	case used[ip].taken():
		return cniError(CodeAddressUnavailable, "requested address %v is allocated to %v; request another, or DEL that container first", ip, used[ip])
	}
	return nil
}

// broadcast is the last address of an IPv4 subnet; IPv6 has none (the
// zero address is returned).
func broadcast(sub netip.Prefix) netip.Addr {
	if !sub.Addr().Is4() {
		return netip.Addr{}
	}
	b := sub.Addr().As4()
	for i := sub.Bits(); i < 32; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return netip.AddrFrom4(b)
}

func reserved(ip netip.Addr, sub netip.Prefix) bool {
	return ip == sub.Addr() || ip == broadcast(sub)
}

// capacity is the number of allocatable addresses of sub (capped at 2^62).
func capacity(sub netip.Prefix) uint64 {
	host := sub.Addr().BitLen() - sub.Bits()
	if host >= 62 {
		return 1 << 62
	}
	n := uint64(1) << host
	if sub.Addr().Is4() {
		return n - 2
	}
	return n - 1
}

// Free is the number of addresses left in sub.
func (st *State) Free(sub netip.Prefix) uint64 { return free(sub, st.used()) }

func free(sub netip.Prefix, used map[netip.Addr]holder) uint64 {
	n := uint64(0)
	for ip := range used {
		if sub.Contains(ip) && !reserved(ip, sub) {
			n++
		}
	}
	return capacity(sub) - min(n, capacity(sub))
}

// next finds a free address of sub, starting after the last one handed
// out. Among any n+3 consecutive addresses, with n of them used and at
// most two reserved, one is free, which bounds the search.
func (st *State) next(sub netip.Prefix, used map[netip.Addr]holder) (netip.Addr, error) {
	left := free(sub, used)
	if left == 0 {
		return netip.Addr{}, cniError(CodePoolExhausted, "subnet %v has no address left (%d allocated); DEL unused containers, run GC, or widen subnet",
			sub, capacity(sub))
	}
	n := capacity(sub) - left
	ip := st.Last[famKey(sub.Addr())]
	if !sub.Contains(ip) {
		ip = sub.Addr()
	}
	for range n + 3 {
		ip = ip.Next()
		if !ip.IsValid() || !sub.Contains(ip) {
			ip = sub.Addr()
		}
		if !reserved(ip, sub) && !used[ip].taken() {
			return ip, nil
		}
	}
	return netip.Addr{}, cniError(CodePoolExhausted, "subnet %v: no free address found", sub)
}

// Complete marks key's allocation as registered. A namespace the
// runtime named (given) is remembered for the container; the oldest
// remembered ones beyond maxNamespaces are forgotten, and how many is
// returned, for the log.
func (s *Store) Complete(key string, given bool) (forgotten int, err error) {
	err = s.Update(func(st *State) (bool, error) {
		a, ok := st.Allocations[key]
		if !ok {
			return false, nil
		}
		a.Complete = true
		if given {
			if st.Namespaces == nil {
				st.Namespaces = map[string]*KnownNamespace{}
			}
			st.Namespaces[a.ContainerID] = &KnownNamespace{Namespace: a.Namespace, Seen: time.Now().UTC()}
			forgotten = st.forgetOldNamespaces(maxNamespaces)
		}
		return true, nil
	})
	return forgotten, err
}

// forgetOldNamespaces keeps the newest max remembered namespaces.
func (st *State) forgetOldNamespaces(max int) int {
	n := len(st.Namespaces) - max
	if n <= 0 {
		return 0
	}
	ids := slices.Collect(maps.Keys(st.Namespaces))
	slices.SortFunc(ids, func(x, y string) int {
		return cmp.Or(st.Namespaces[x].Seen.Compare(st.Namespaces[y].Seen), strings.Compare(x, y))
	})
	for _, id := range ids[:n] {
		delete(st.Namespaces, id)
	}
	return n
}

// KnownNamespace is the namespace the runtime named at an earlier ADD of
// containerID, or "".
func (s *Store) KnownNamespace(containerID string) (string, error) {
	st, err := s.Read()
	if err != nil || st.Namespaces[containerID] == nil {
		return "", err
	}
	return st.Namespaces[containerID].Namespace, nil
}

// ForgetNamespaces forgets the remembered namespaces of the containers
// not in keep (GC: the runtime says those are all that exist).
func (s *Store) ForgetNamespaces(keep map[string]bool) error {
	return s.Update(func(st *State) (bool, error) {
		n := len(st.Namespaces)
		maps.DeleteFunc(st.Namespaces, func(id string, _ *KnownNamespace) bool { return !keep[id] })
		return len(st.Namespaces) != n, nil
	})
}

// Release removes key's allocation and returns it (nil when there was
// none).
func (s *Store) Release(key string) (*Allocation, error) {
	var out *Allocation
	err := s.Update(func(st *State) (bool, error) {
		out = st.Allocations[key]
		delete(st.Allocations, key)
		return out != nil, nil
	})
	return out, err
}

// MarkPending moves key's allocation to Pending (or records a bare entry
// for hostIf when there is none): its addresses stay reserved until the
// agent has forgotten the workload.
func (s *Store) MarkPending(containerID, ifName, hostIf string) error {
	return s.Update(func(st *State) (bool, error) {
		key := allocKey(containerID, ifName)
		a := st.Allocations[key]
		if a == nil {
			a = &Allocation{ContainerID: containerID, IfName: ifName, HostIf: hostIf, Created: time.Now().UTC()}
		}
		delete(st.Allocations, key)
		if slices.ContainsFunc(st.Pending, func(p *Allocation) bool { return p.Key() == key }) {
			return true, nil
		}
		st.Pending = append(st.Pending, a)
		return true, nil
	})
}

// DropPending forgets the pending entries of the given host interfaces,
// which frees their addresses.
func (s *Store) DropPending(hostIfs map[string]bool) error {
	return s.Update(func(st *State) (bool, error) {
		n := len(st.Pending)
		st.Pending = slices.DeleteFunc(st.Pending, func(p *Allocation) bool { return hostIfs[p.HostIf] })
		return len(st.Pending) != n, nil
	})
}
