// Package vmtest boots real virtual machines for tests: QEMU from Debian's
// packages running a stock Debian kernel with a small initramfs (busybox,
// the modules asked for, and whatever files the test adds), its NICs taps
// in a network namespace the test made, its console kept in a file and a
// second serial line to run commands inside it. Accelerated where the
// machine has hardware virtualization, TCG otherwise (this machine kind's
// /dev/kvm is a PVM backend that cannot run a stock kernel:
// ../shared/KERNEL-NOTES.md).
package vmtest

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A NIC is a VM network interface backed by a tap that exists in the
// namespace the VM runs in (eth0, eth1, … inside, in this order).
type NIC struct {
	Tap string
	MAC string // 52:54:00:…; empty: derived from the tap's name
}

// Options say what to boot.
type Options struct {
	Name    string // used in file names and logs
	NetNS   string // path of the network namespace QEMU runs in (its taps are there)
	NICs    []NIC
	Modules []string      // kernel modules to load at boot, with their dependencies
	Files   *Initramfs    // more files for the initramfs; nil: none
	MemMB   int           // default 320
	Dir     string        // where the initramfs, console and control socket go
	Boot    time.Duration // how long to wait until commands run; default 3 min
}

// A VM is a running QEMU.
type VM struct {
	name    string
	cmd     *exec.Cmd
	console string
	accel   string
	booted  time.Duration

	mu   sync.Mutex
	conn net.Conn
	rd   *bufio.Reader
	seq  int
	done chan struct{}
}

const initScript = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /run/netns /bin /sbin /usr/bin /usr/sbin /var/run /busybox
/bin/busybox --install -s /busybox
# Debian's own programs that a test added (AddBinary) before busybox's.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/busybox
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mkdir -p /run/netns
for m in $(cat /etc/bhvm-modules); do insmod "$m" || echo "BHVM-MODULE-FAILED $m"; done
ip link set lo up
echo "BHVM-INIT $(cat /proc/uptime)"
stty -F /dev/ttyS1 raw -echo
exec 3<>/dev/ttyS1
while read -r id line <&3; do
	echo "$line" | base64 -d > /tmp/bhvm-cmd
	sh /tmp/bhvm-cmd > /tmp/bhvm-out 2>&1 < /dev/null
	rc=$?
	printf 'BHVM-OUT %s %s ' "$id" "$rc" >&3
	base64 /tmp/bhvm-out | tr -d '\n' >&3
	printf '\n' >&3
done
poweroff -f
`

// Accel is the accelerator QEMU is given: $BULKHEAD_VM_ACCEL, else kvm
// where the kernel has hardware virtualization (kvm_intel or kvm_amd),
// else tcg.
func Accel() string {
	if a := os.Getenv("BULKHEAD_VM_ACCEL"); a != "" {
		return a
	}
	for _, m := range []string{"kvm_intel", "kvm_amd"} {
		if _, err := os.Stat("/sys/module/" + m); err == nil {
			if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil {
				f.Close()
				return "kvm"
			}
		}
	}
	return "tcg"
}

// Boot starts the VM and returns once a command runs inside it. The
// caller must Stop it.
func Boot(k *Kernel, o Options) (*VM, error) {
	if o.MemMB == 0 {
		o.MemMB = 320
	}
	if o.Boot == 0 {
		o.Boot = 3 * time.Minute
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return nil, fmt.Errorf("vmtest: busybox (Debian's busybox-static) is needed: %w", err)
	}
	r := o.Files
	if r == nil {
		r = NewInitramfs()
	}
	if err := r.AddFile("/bin/busybox", busybox); err != nil {
		return nil, err
	}
	r.Add("/init", 0o755, []byte(initScript))
	mods, err := k.Modules(o.Modules...)
	if err != nil {
		return nil, err
	}
	var list []string
	for _, m := range mods {
		in := "/lib/modules/" + k.Release + "/" + filepath.Base(m)
		if err := r.AddFile(in, m); err != nil {
			return nil, err
		}
		list = append(list, in)
	}
	r.Add("/etc/bhvm-modules", 0o644, []byte(strings.Join(list, "\n")+"\n"))
	initrd := filepath.Join(o.Dir, o.Name+".initrd.gz")
	f, err := os.Create(initrd)
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	if _, err := r.WriteTo(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("vmtest: initramfs: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	vm := &VM{name: o.Name, console: filepath.Join(o.Dir, o.Name+".console"), accel: Accel(), done: make(chan struct{})}
	ctl := filepath.Join(o.Dir, o.Name+".ctl")
	cpu := "max"
	if vm.accel == "kvm" {
		cpu = "host"
	}
	args := []string{"--net=" + o.NetNS, "qemu-system-x86_64",
		"-accel", vm.accel, "-M", "q35", "-cpu", cpu, "-m", strconv.Itoa(o.MemMB), "-smp", "1",
		"-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults",
		"-kernel", k.Image, "-initrd", initrd,
		"-append", "console=ttyS0 panic=-1 quiet loglevel=4 tsc=reliable",
		"-serial", "file:" + vm.console,
		"-chardev", "socket,id=bhctl,path=" + ctl + ",server=on,wait=off",
		"-serial", "chardev:bhctl",
	}
	for i, n := range o.NICs {
		mac := n.MAC
		if mac == "" {
			mac = macFor(n.Tap)
		}
		id := fmt.Sprintf("n%d", i)
		args = append(args, "-netdev", "tap,id="+id+",ifname="+n.Tap+",script=no,downscript=no",
			"-device", "virtio-net-pci,netdev="+id+",mac="+mac)
	}
	vm.cmd = exec.Command("nsenter", args...)
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	vm.cmd.Stderr = &stderr
	start := time.Now()
	if err := vm.cmd.Start(); err != nil {
		return nil, fmt.Errorf("vmtest: qemu: %w", err)
	}
	go func() { vm.cmd.Wait(); close(vm.done) }()
	deadline := time.Now().Add(o.Boot)
	for vm.conn == nil {
		c, err := net.Dial("unix", ctl)
		if err == nil {
			vm.conn, vm.rd = c, bufio.NewReaderSize(c, 1<<20)
			break
		}
		select {
		case <-vm.done:
			return nil, fmt.Errorf("vmtest: qemu exited: %s", stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			vm.Stop()
			return nil, fmt.Errorf("vmtest: no control socket after %v", o.Boot)
		}
	}
	// The guest reads commands once its init is up; ask until it answers.
	for {
		if _, _, err := vm.run("true", 2*time.Second); err == nil {
			break
		}
		select {
		case <-vm.done:
			return nil, fmt.Errorf("vmtest: qemu exited while booting: %s; console: %s", stderr.String(), vm.Console())
		default:
		}
		if time.Now().After(deadline) {
			c := vm.Console()
			vm.Stop()
			return nil, fmt.Errorf("vmtest: %s did not boot in %v (accel %s); console: %s", o.Name, o.Boot, vm.accel, c)
		}
	}
	vm.booted = time.Since(start)
	return vm, nil
}

func macFor(tap string) string {
	var h uint32 = 2166136261
	for i := 0; i < len(tap); i++ {
		h = (h ^ uint32(tap[i])) * 16777619
	}
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", byte(h>>16), byte(h>>8), byte(h))
}

// BootTime is how long Boot took until the first command ran.
func (vm *VM) BootTime() time.Duration { return vm.booted }

// AccelUsed is the accelerator the VM runs with.
func (vm *VM) AccelUsed() string { return vm.accel }

// Console returns what the VM printed on its console so far.
func (vm *VM) Console() string {
	b, _ := os.ReadFile(vm.console)
	return string(b)
}

// Run runs a shell command inside the VM (busybox sh, stdin /dev/null) and
// returns its output and exit status; timeout bounds the wait for it.
func (vm *VM) Run(command string, timeout time.Duration) (string, int, error) {
	return vm.run(command, timeout)
}

func (vm *VM) run(command string, timeout time.Duration) (string, int, error) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.seq++
	id := strconv.Itoa(vm.seq)
	line := id + " " + base64.StdEncoding.EncodeToString([]byte(command)) + "\n"
	vm.conn.SetDeadline(time.Now().Add(timeout))
	defer vm.conn.SetDeadline(time.Time{})
	if _, err := vm.conn.Write([]byte(line)); err != nil {
		return "", -1, fmt.Errorf("vmtest: %s: send: %w", vm.name, err)
	}
	for {
		l, err := vm.rd.ReadString('\n')
		if err != nil {
			return "", -1, fmt.Errorf("vmtest: %s: %q: %w", vm.name, command, err)
		}
		f := strings.Fields(strings.TrimSpace(l))
		if len(f) < 3 || f[0] != "BHVM-OUT" || f[1] != id {
			continue // an answer to an earlier, timed-out command
		}
		rc, _ := strconv.Atoi(f[2])
		var out []byte
		if len(f) > 3 {
			out, _ = base64.StdEncoding.DecodeString(f[3])
		}
		return string(out), rc, nil
	}
}

// Stop ends QEMU (the whole process group) and waits for it.
func (vm *VM) Stop() {
	if vm.conn != nil {
		vm.conn.Close()
	}
	if vm.cmd.Process != nil {
		syscall.Kill(-vm.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-vm.done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-vm.cmd.Process.Pid, syscall.SIGKILL)
			<-vm.done
		}
	}
}
