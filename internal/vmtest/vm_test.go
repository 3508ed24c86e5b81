package vmtest_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
	"github.com/bulkhead-dev/bulkhead/internal/vmtest"
)

// A real VM boots from Debian's kernel to the network: its NIC a tap in a
// namespace the test made, a command runs inside it, and a server inside
// it answers a client in that namespace.
func TestBootToTheNetwork(t *testing.T) {
	nstest.RequireRoot(t)
	nstest.RequireCommand(t, "qemu-system-x86_64")
	nstest.RequireCommand(t, "busybox")
	k, err := vmtest.FindKernel()
	if err != nil {
		nstest.Missing(t, err.Error())
	}
	hv := nstest.NS(t, "bhvmh")
	tap := "bhvmt0"
	nstest.Run(t, hv, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
	nstest.Run(t, hv, "ip", "addr", "add", "10.231.0.1/24", "dev", tap)
	nstest.Run(t, hv, "ip", "link", "set", tap, "up")
	files := vmtest.NewInitramfs()
	files.Add("/www/index.html", 0o644, []byte("bulkhead-vm\n"))
	vm, err := vmtest.Boot(k, vmtest.Options{
		Name: "bhvmboot", NetNS: hv.Path(), NICs: []vmtest.NIC{{Tap: tap}},
		Modules: []string{"virtio_pci", "virtio_net"}, Files: files, Dir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vm.Stop)
	t.Logf("booted in %v (accel %s)", vm.BootTime().Round(time.Millisecond), vm.AccelUsed())
	out, rc, err := vm.Run("ip addr add 10.231.0.2/24 dev eth0 && ip link set eth0 up && httpd -p 8080 -h /www && uname -r", 30*time.Second)
	if err != nil || rc != 0 {
		t.Fatalf("configure: rc %d %v: %s\nconsole: %s", rc, err, out, vm.Console())
	}
	if !strings.Contains(out, k.Release) {
		t.Fatalf("uname -r in the VM: %q, want %s", out, k.Release)
	}
	var body string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		body, err = get(hv, "10.231.0.2:8080")
		if err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil || !strings.Contains(body, "bulkhead-vm") {
		t.Fatalf("GET from the hypervisor namespace: %q %v", body, err)
	}
	if out, rc, _ := vm.Run("exit 3", 10*time.Second); rc != 3 {
		t.Fatalf("exit status: %d %q", rc, out)
	}
}

func get(n *netns.NS, addr string) (string, error) {
	var body string
	err := n.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(c, "GET /index.html HTTP/1.0\r\n\r\n")
		var sb strings.Builder
		s := bufio.NewScanner(c)
		for s.Scan() {
			sb.WriteString(s.Text() + "\n")
		}
		body = sb.String()
		return nil
	})
	return body, err
}
