package netns

import (
	"fmt"
	"os"

	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ID identifies a network namespace: the device and inode of its nsfs
// file, as stat(2) of /proc/PID/ns/net or of a bind mount under /run/netns
// shows them. Two paths name the same namespace when their IDs are equal.
type ID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

// String is the form the kernel prints in /proc/PID/ns/net's link.
func (id ID) String() string { return fmt.Sprintf("net:[%d]", id.Ino) }

// OpenNet opens path as a network namespace, refusing without blocking
// anything that is not one: a FIFO (whose plain open would wait for a
// writer forever), a device, a directory, a regular file, or a namespace
// of another kind. The caller closes the handle.
func OpenNet(path string) (vnetns.NsHandle, ID, error) {
	if path == "" {
		return -1, ID{}, fmt.Errorf("netns: no namespace path given")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return -1, ID{}, fmt.Errorf("netns: %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return -1, ID{}, fmt.Errorf("netns: %s is a %s, not a network namespace", path, kind(fi.Mode()))
	}
	// O_NONBLOCK: should path have turned into a FIFO since the stat, the
	// open returns at once instead of waiting for a writer.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, ID{}, fmt.Errorf("netns: open %s: %w", path, err)
	}
	id, err := checkNetFD(fd)
	if err != nil {
		unix.Close(fd)
		return -1, ID{}, fmt.Errorf("netns: %s: %w", path, err)
	}
	return vnetns.NsHandle(fd), id, nil
}

// checkNetFD verifies that fd is an nsfs file of a network namespace and
// returns its ID.
func checkNetFD(fd int) (ID, error) {
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return ID{}, fmt.Errorf("statfs: %w", err)
	}
	if sfs.Type != unix.NSFS_MAGIC {
		return ID{}, fmt.Errorf("not a namespace file (file system type %#x, want nsfs); give /run/netns/NAME or /proc/PID/ns/net", sfs.Type)
	}
	t, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil {
		return ID{}, fmt.Errorf("namespace type: %w", err)
	}
	if t != unix.CLONE_NEWNET {
		return ID{}, fmt.Errorf("a namespace of another kind (type %#x), not a network namespace", t)
	}
	return IDOfFD(fd)
}

// IDOfFD is the ID of an open namespace file.
func IDOfFD(fd int) (ID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return ID{}, fmt.Errorf("netns: stat namespace: %w", err)
	}
	return ID{Dev: st.Dev, Ino: st.Ino}, nil
}

// IDOf is the ID of the network namespace at path, checked as OpenNet
// does.
func IDOf(path string) (ID, error) {
	h, id, err := OpenNet(path)
	if err != nil {
		return ID{}, err
	}
	h.Close()
	return id, nil
}

// IDOfPID is the ID of process pid's network namespace (its main
// thread's).
func IDOfPID(pid int) (ID, error) {
	if pid <= 0 {
		return ID{}, fmt.Errorf("netns: pid %d: not a process this host's /proc shows", pid)
	}
	return IDOf(fmt.Sprintf("/proc/%d/ns/net", pid))
}

// Self is the ID of the calling process's network namespace.
func Self() (ID, error) { return IDOf("/proc/self/ns/net") }

func kind(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "FIFO"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeDevice != 0:
		return "device"
	case m.IsDir():
		return "directory"
	}
	return "file of another type"
}
