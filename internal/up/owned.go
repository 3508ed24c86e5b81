package up

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/bulkhead-dev/bulkhead/internal/attach"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// OwnedFile, in the data directory, lists the namespaces and host
// interfaces this instance's demo created. The next start of the same
// instance removes what a demo that was not stopped left behind — only
// that: another instance on the machine, even with the same prefix,
// keeps its own.
const OwnedFile = "demo-owned.json"

// owned is the record of what the demo created. A namespace is known by
// its name and the device and inode of its bind mount (the namespace's
// identity while it exists), an interface by its name and index, so that
// a name someone else took since is not mistaken for ours.
type owned struct {
	path string
	mu   sync.Mutex
	rec  ownedRecord
}

type ownedRecord struct {
	Namespaces []ownedNS    `json:"namespaces"`
	Interfaces []ownedIface `json:"interfaces"`
}

type ownedNS struct {
	Name  string `json:"name"`
	Dev   uint64 `json:"dev"`
	Inode uint64 `json:"inode"`
}

type ownedIface struct {
	Name  string `json:"name"`
	Index int    `json:"index"`
}

func newOwned(dataDir string) *owned { return &owned{path: filepath.Join(dataDir, OwnedFile)} }

// nsID is the identity of a named namespace.
func nsID(name string) (dev, ino uint64, err error) {
	st, err := os.Stat(filepath.Join(netns.Dir, name))
	if err != nil {
		return 0, 0, err
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, fmt.Errorf("up: stat %s: no device and inode", name)
	}
	return uint64(sys.Dev), sys.Ino, nil
}

// createNS creates the namespace name and records it, refusing a name
// that exists: it is not this instance's (its leftovers were removed at
// start).
func (o *owned) createNS(name string) (*netns.NS, error) {
	if _, err := os.Stat(filepath.Join(netns.Dir, name)); err == nil {
		return nil, fmt.Errorf("up: demo: namespace %s exists and is not this instance's: is another `bulkhead up --demo` running on this machine? Give this one another --demo-prefix", name)
	}
	ns, err := netns.Create(name)
	if err != nil {
		return nil, fmt.Errorf("up: demo: %w", err)
	}
	dev, ino, err := nsID(name)
	if err == nil {
		o.mu.Lock()
		o.rec.Namespaces = append(o.rec.Namespaces, ownedNS{Name: name, Dev: dev, Inode: ino})
		err = o.saveLocked()
		o.mu.Unlock()
	}
	if err != nil {
		_ = ns.Delete()
		return nil, fmt.Errorf("up: demo: record namespace %s: %w", name, err)
	}
	return ns, nil
}

// recordIface records a host interface the demo created (called in the
// host namespace).
func (o *owned) recordIface(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("up: demo: record interface %s: %w", name, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.rec.Interfaces = append(o.rec.Interfaces, ownedIface{Name: name, Index: l.Attrs().Index})
	return o.saveLocked()
}

func (o *owned) saveLocked() error {
	data, _ := json.MarshalIndent(o.rec, "", "  ")
	tmp := o.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, o.path)
}

// removeRecorded removes what the record on disk names and is still
// the same object, then the record; inHost runs a function in the host
// namespace. It returns the names it left alone because someone else
// holds them now.
func (o *owned) removeRecorded(inHost func(func() error) error) (kept []string, err error) {
	data, err := os.ReadFile(o.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("up: demo: read %s: %w", o.path, err)
	}
	var rec ownedRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("up: demo: %s: %w", o.path, err)
	}
	var errs []error
	_ = inHost(func() error {
		for _, i := range rec.Interfaces {
			l, err := netlink.LinkByName(i.Name)
			switch {
			case err != nil:
				continue // gone with its namespace
			case l.Attrs().Index != i.Index:
				kept = append(kept, "interface "+i.Name)
			default:
				errs = append(errs, attach.Del(i.Name))
			}
		}
		return nil
	})
	for _, n := range rec.Namespaces {
		dev, ino, err := nsID(n.Name)
		switch {
		case err != nil:
			continue // gone
		case dev != n.Dev || ino != n.Inode:
			kept = append(kept, "namespace "+n.Name)
		default:
			errs = append(errs, (&netns.NS{Name: n.Name}).Delete())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return kept, err
	}
	return kept, o.clear()
}

// clear forgets the record, once what it names is gone.
func (o *owned) clear() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.rec = ownedRecord{}
	if err := os.Remove(o.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("up: demo: remove %s: %w", o.path, err)
	}
	return nil
}
