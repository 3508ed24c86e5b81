package vmtest

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"sort"
	"strings"
)

// An Initramfs is the files of a VM's initial root file system, by path
// inside the VM, written as a gzip'd newc cpio archive (the format the
// kernel unpacks; Documentation/driver-api/early-userspace/buffer-format.rst).
// Directories that hold a file are made on the way.
type Initramfs struct {
	files map[string]file
}

type file struct {
	mode uint32 // type and permission bits, as cpio's c_mode
	data []byte
	link string
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeLink = 0o120000
)

// NewInitramfs returns an empty archive.
func NewInitramfs() *Initramfs { return &Initramfs{files: map[string]file{}} }

// Add puts data at name (an absolute path in the VM) with permission perm.
func (r *Initramfs) Add(name string, perm uint32, data []byte) {
	r.files[clean(name)] = file{mode: modeFile | perm&0o7777, data: data}
}

// AddFile copies the host file src to name, keeping its permission bits.
func (r *Initramfs) AddFile(name, src string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("vmtest: initramfs: %w", err)
	}
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("vmtest: initramfs: %w", err)
	}
	r.Add(name, uint32(st.Mode().Perm()), data)
	return nil
}

// Symlink makes name a symbolic link to target.
func (r *Initramfs) Symlink(name, target string) {
	r.files[clean(name)] = file{mode: modeLink | 0o777, link: target}
}

// Dir makes an empty directory.
func (r *Initramfs) Dir(name string) { r.files[clean(name)] = file{mode: modeDir | 0o755} }

func clean(name string) string { return strings.TrimPrefix(path.Clean("/"+name), "/") }

// WriteTo writes the archive, gzip'd, to w.
func (r *Initramfs) WriteTo(w io.Writer) (int64, error) {
	all := map[string]file{}
	for name, f := range r.files {
		all[name] = f
		for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := all[d]; !ok {
				all[d] = file{mode: modeDir | 0o755}
			}
		}
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	sort.Strings(names) // parents before children
	var buf bytes.Buffer
	for i, n := range names {
		f := all[n]
		data := f.data
		if f.mode&0o170000 == modeLink {
			data = []byte(f.link)
		}
		nlink := 1
		if f.mode&0o170000 == modeDir {
			nlink = 2
		}
		writeEntry(&buf, uint32(i+1), f.mode, uint32(nlink), n, data)
	}
	writeEntry(&buf, 0, 0, 1, "TRAILER!!!", nil)
	cw := &countWriter{w: w}
	zw := gzip.NewWriter(cw)
	if _, err := zw.Write(buf.Bytes()); err != nil {
		return cw.n, err
	}
	err := zw.Close()
	return cw.n, err
}

func writeEntry(buf *bytes.Buffer, ino, mode, nlink uint32, name string, data []byte) {
	fmt.Fprintf(buf, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	buf.WriteString(name)
	buf.WriteByte(0)
	pad(buf)
	buf.Write(data)
	pad(buf)
}

func pad(buf *bytes.Buffer) {
	for buf.Len()%4 != 0 {
		buf.WriteByte(0)
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// AddBinary copies a dynamically linked host program to the same path in
// the VM with the shared libraries ldd says it loads (and their loader),
// so that Debian's own tools (nft, ip) run inside a VM as on the host.
func (r *Initramfs) AddBinary(program string) error {
	p, err := exec.LookPath(program)
	if err != nil {
		return fmt.Errorf("vmtest: initramfs: %w", err)
	}
	if err := r.AddFile(p, p); err != nil {
		return err
	}
	out, err := exec.Command("ldd", p).Output()
	if err != nil {
		return nil // a static program needs nothing more
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		var lib string
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			lib = f[2]
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			lib = f[0]
		default:
			continue
		}
		if err := r.AddFile(lib, lib); err != nil {
			return err
		}
	}
	return nil
}
