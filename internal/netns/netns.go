// Package netns creates, enters and removes named network namespaces (the
// ones `ip netns` shows, bound under /run/netns). Code that must run inside
// a namespace runs through Do, on a locked OS thread that is restored
// afterwards: a Go goroutine can move between threads, and a thread's
// namespace is the thread's, not the process's (see the CNI plugins'
// pkg/ns README for the whole story).
package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Dir is where named namespaces are bound.
const Dir = "/run/netns"

// NS is a named network namespace.
type NS struct {
	Name string
}

// Path is the namespace's bind mount, usable as a CNI_NETNS.
func (n *NS) Path() string { return filepath.Join(Dir, n.Name) }

// Create makes a new named namespace. The calling goroutine's thread is
// not changed.
func Create(name string) (*NS, error) {
	if name == "" || strings.ContainsAny(name, "/ ") || len(name) > 64 {
		return nil, fmt.Errorf("netns: create %q: a name is 1 to 64 characters without / or spaces", name)
	}
	if err := sharedDir(); err != nil {
		return nil, fmt.Errorf("netns: create %q: %w", name, err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		return nil, fmt.Errorf("netns: create %q: %w", name, err)
	}
	defer orig.Close()
	h, err := vnetns.NewNamed(name) // switches this thread into the new namespace
	if err != nil {
		// NewNamed fails after the switch (a name that exists): come back,
		// or keep the thread locked so that it dies with this goroutine.
		if rerr := vnetns.Set(orig); rerr != nil {
			runtime.LockOSThread()
		}
		return nil, fmt.Errorf("netns: create %q: %w", name, err)
	}
	h.Close()
	if err := vnetns.Set(orig); err != nil {
		// The thread is left in the wrong namespace: keep it locked, so
		// it dies with this goroutine instead of serving another one.
		runtime.LockOSThread()
		return nil, fmt.Errorf("netns: create %q: restore thread: %w", name, err)
	}
	return &NS{Name: name}, nil
}

var dirOnce struct {
	sync.Mutex
	done bool
}

// sharedDir makes Dir a shared mount point of its own, as `ip netns add`
// and Podman do before they bind a namespace under it. Were a namespace
// bound first, on the plain directory, the first Podman (or ip) to run
// would bind Dir over itself and hide that namespace's mount, which no
// one could then remove (unlink says EBUSY). Seen on a fresh machine: the
// first Podman test left its host namespace behind.
func sharedDir() error {
	dirOnce.Lock()
	defer dirOnce.Unlock()
	if dirOnce.done {
		return nil
	}
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return fmt.Errorf("make %s: %w", Dir, err)
	}
	err := unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err = unix.Mount(Dir, Dir, "none", unix.MS_BIND|unix.MS_REC, ""); err == nil {
			err = unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
		}
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount point: %w", Dir, err)
	}
	dirOnce.done = true
	return nil
}

// Open returns the existing namespace name.
func Open(name string) (*NS, error) {
	if _, err := os.Stat(filepath.Join(Dir, name)); err != nil {
		return nil, fmt.Errorf("netns: open %q: %w", name, err)
	}
	return &NS{Name: name}, nil
}

// Handle opens the namespace; the caller closes it.
func (n *NS) Handle() (vnetns.NsHandle, error) {
	h, err := vnetns.GetFromPath(n.Path())
	if err != nil {
		return 0, fmt.Errorf("netns: open %q: %w", n.Name, err)
	}
	return h, nil
}

// Do runs fn with the calling goroutine locked to a thread inside n, and
// restores the thread afterwards. Goroutines fn starts run elsewhere.
func (n *NS) Do(fn func() error) error {
	return DoPath(n.Path(), fn)
}

// DoPath is Do for a namespace given by its path (such as /proc/PID/ns/net
// or a CNI_NETNS).
func DoPath(path string, fn func() error) error {
	target, err := vnetns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("netns: open %s: %w", path, err)
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: current namespace: %w", err)
	}
	defer orig.Close()
	if err := vnetns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: enter %s: %w", path, err)
	}
	ferr := fn()
	if err := vnetns.Set(orig); err != nil {
		// Leave the thread locked: it exits with the goroutine.
		return errors.Join(ferr, fmt.Errorf("netns: restore thread: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// Delete removes the namespace's name. The namespace itself goes away
// when nothing uses it any more. Deleting a missing namespace is not an
// error.
func (n *NS) Delete() error {
	if err := vnetns.DeleteNamed(n.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netns: delete %q: %w", n.Name, err)
	}
	return nil
}

// DeleteAll removes every named namespace whose name starts with prefix.
func DeleteAll(prefix string) error {
	if prefix == "" {
		return errors.New("netns: delete all: an empty prefix would remove every namespace")
	}
	entries, err := os.ReadDir(Dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("netns: list %s: %w", Dir, err)
	}
	var errs []error
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			errs = append(errs, (&NS{Name: e.Name()}).Delete())
		}
	}
	return errors.Join(errs...)
}

// Sysctl writes a sysctl of the calling thread's network namespace, such
// as "net/ipv4/ip_forward" (slashes or dots).
func Sysctl(key, value string) error {
	p := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	if strings.Contains(key, "/") {
		p = filepath.Join("/proc/sys", key)
	}
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("netns: sysctl %s=%s: %w", key, value, err)
	}
	return nil
}
