package vmtest

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// A Kernel is a stock Debian kernel unpacked from its package: the image
// QEMU boots and the modules it needs, which the Debian kernel builds as
// modules (virtio, nf_tables, veth) and the initramfs loads.
type Kernel struct {
	Image   string            // vmlinuz
	Release string            // 6.1.0-57-amd64
	modules map[string]string // module name (with _) → .ko path
	aliases map[string]string // alias → module name, read when first needed
}

// CacheDir is where the kernel package is downloaded and unpacked:
// $BULKHEAD_VM_CACHE, or /var/cache/bulkhead-vmtest.
func CacheDir() string {
	if d := os.Getenv("BULKHEAD_VM_CACHE"); d != "" {
		return d
	}
	return "/var/cache/bulkhead-vmtest"
}

var imagePkg = regexp.MustCompile(`Depends: (linux-image-[0-9][^ \n]*-amd64)`)

// FindKernel returns the kernel unpacked in CacheDir, downloading
// Debian's current linux-image-amd64 kernel there with apt-get download
// (and unpacking it with dpkg-deb) when none is there yet.
func FindKernel() (*Kernel, error) {
	dir := CacheDir()
	if k, err := openKernel(dir); err == nil {
		return k, nil
	}
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("vmtest: apt-cache depends linux-image-amd64: %v: %s", err, out)
	}
	m := imagePkg.FindSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("vmtest: no kernel image package in %q", out)
	}
	dl := filepath.Join(dir, "download")
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	cmd := exec.Command("apt-get", "download", string(m[1]))
	cmd.Dir = dl
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("vmtest: apt-get download %s: %v: %s", m[1], err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dl, string(m[1])+"_*.deb"))
	if len(debs) == 0 {
		return nil, fmt.Errorf("vmtest: apt-get download %s left no package in %s", m[1], dl)
	}
	tmp := filepath.Join(dir, "unpack.tmp")
	os.RemoveAll(tmp)
	if out, err := exec.Command("dpkg-deb", "-x", debs[0], tmp).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("vmtest: dpkg-deb -x %s: %v: %s", debs[0], err, out)
	}
	root := filepath.Join(dir, "root")
	os.RemoveAll(root)
	if err := os.Rename(tmp, root); err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	return openKernel(dir)
}

func openKernel(dir string) (*Kernel, error) {
	images, _ := filepath.Glob(filepath.Join(dir, "root", "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return nil, fmt.Errorf("vmtest: %d kernel images in %s", len(images), dir)
	}
	release := strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")
	k := &Kernel{Image: images[0], Release: release, modules: map[string]string{}}
	mods := filepath.Join(dir, "root", "lib", "modules", release, "kernel")
	err := filepath.WalkDir(mods, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasSuffix(p, ".ko") {
			k.modules[modName(filepath.Base(p))] = p
		}
		return nil
	})
	if err != nil || len(k.modules) == 0 {
		return nil, fmt.Errorf("vmtest: modules of %s: %v", release, err)
	}
	return k, nil
}

func modName(file string) string {
	return strings.ReplaceAll(strings.TrimSuffix(file, ".ko"), "-", "_")
}

// Modules returns the .ko files that loading names needs, each after the
// modules it depends on (read from its .modinfo section, as depmod does),
// every module once. A name the kernel builds in, or does not have, is
// an error: the test should not ask for it.
func (k *Kernel) Modules(names ...string) ([]string, error) {
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(string) error
	visit = func(n string) error {
		n = modName(n)
		switch state[n] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("vmtest: module dependency cycle at %s", n)
		}
		p, ok := k.modules[n]
		if !ok {
			a, err := k.alias(n)
			if err != nil {
				return err
			}
			return visit(a)
		}
		state[n] = 1
		deps, err := moduleDepends(p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[n] = 2
		order = append(order, p)
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// alias names the module that provides an alias (crc32c: crc32c_generic),
// as a soft dependency names it.
func (k *Kernel) alias(name string) (string, error) {
	if k.aliases == nil {
		k.aliases = map[string]string{}
		var mods []string
		for m := range k.modules {
			mods = append(mods, m)
		}
		sort.Strings(mods) // the first module of an alias, by name, provides it
		for _, m := range mods {
			info, err := modinfo(k.modules[m])
			if err != nil {
				return "", err
			}
			for _, kv := range info {
				if a, ok := bytes.CutPrefix(kv, []byte("alias=")); ok {
					if _, dup := k.aliases[string(a)]; !dup {
						k.aliases[string(a)] = m
					}
				}
			}
		}
	}
	m, ok := k.aliases[name]
	if !ok {
		return "", fmt.Errorf("vmtest: kernel %s has no module %s", k.Release, name)
	}
	return m, nil
}

// moduleDepends lists what a module needs loaded first: its depends= and
// its soft pre-dependencies (libcrc32c's crc32c).
func moduleDepends(ko string) ([]string, error) {
	info, err := modinfo(ko)
	if err != nil {
		return nil, err
	}
	var deps []string
	for _, kv := range info {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok && len(v) > 0 {
			deps = append(deps, strings.Split(string(v), ",")...)
		}
		if v, ok := bytes.CutPrefix(kv, []byte("softdep=")); ok {
			f := strings.Fields(string(v))
			for i := 0; i < len(f); i++ {
				if f[i] != "pre:" {
					continue
				}
				for i++; i < len(f) && !strings.HasSuffix(f[i], ":"); i++ {
					deps = append(deps, f[i])
				}
				i--
			}
		}
	}
	return deps, nil
}

func modinfo(ko string) ([][]byte, error) {
	f, err := elf.Open(ko)
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return nil, nil
	}
	data, err := s.Data()
	if err != nil {
		return nil, fmt.Errorf("vmtest: %s: %w", ko, err)
	}
	return bytes.Split(data, []byte{0}), nil
}

// AgentModules are the modules Bulkhead's agent and its nft dataplane use
// in a VM running Debian's kernel (where they are modules, not built in),
// and veth for the VM's own workloads.
var AgentModules = []string{
	"virtio_pci", "virtio_net", "veth",
	"nf_tables", "nf_conntrack", "nft_ct", "nft_compat", "xt_NFQUEUE", "nft_queue",
	"nfnetlink_queue", "nfnetlink_log", "nft_log", "nft_limit", "nft_reject_inet",
	"nft_objref", "nft_numgen", "nft_hash", "nft_quota", "nft_fib_inet", "nf_conntrack_netlink",
}
