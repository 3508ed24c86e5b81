package nft

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
	"github.com/bulkhead-dev/bulkhead/internal/vmtest"
)

// inVM is set in the environment of this test binary when it runs inside
// the VM below, so that it does not boot another.
const inVM = "BULKHEAD_NFT_IN_VM"

// debianKernelTests are the kernel tests run again on Debian 12's stock
// kernel: enforcement, walls, spoofing, logs, the escalate path, the
// conformance suite and the host's nft listing the table.
const debianKernelTests = "^(TestEnforce|TestWall|TestAntiSpoofing|TestNFLOG|TestEscalateFailsClosed|TestConformance|TestHostNFTListsTheTable|TestAdoptionHasNoWindow)$"

// The dataplane on another kernel than this machine's: a real VM boots
// Debian 12's kernel (6.1, where netfilter is modules) and runs this very
// test binary's kernel tests inside it. Kernels differ in what they
// accept: 6.1 refused every generation until no rule asked a map for
// membership (TestNoMembershipLookupIntoAMap).
func TestOnDebianKernel(t *testing.T) {
	if os.Getenv(inVM) != "" {
		t.Skip("inside the VM already")
	}
	nstest.RequireRoot(t)
	nstest.RequireCommand(t, "qemu-system-x86_64")
	nstest.RequireCommand(t, "busybox")
	k, err := vmtest.FindKernel()
	if err != nil {
		nstest.Missing(t, err.Error())
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	files := vmtest.NewInitramfs()
	if err := files.AddBinary(self); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"nft", "ip", "ping"} {
		if err := files.AddBinary(b); err != nil {
			t.Fatal(err)
		}
	}
	hv := nstest.NS(t, "bhnfv")
	vm, err := vmtest.Boot(k, vmtest.Options{Name: "bhnfvm", NetNS: hv.Path(), MemMB: 768,
		Modules: vmtest.AgentModules, Files: files, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vm.Stop)
	t.Logf("kernel %s booted in %v (accel %s)", k.Release, vm.BootTime().Round(time.Millisecond), vm.AccelUsed())
	cmd := "mkdir -p /tmp/t && cd /tmp/t && " + inVM + "=1 " + self + " -test.count=1 -test.v -test.run '" + debianKernelTests + "' 2>&1"
	out, rc, err := vm.Run(cmd, 8*time.Minute)
	if err != nil || rc != 0 {
		t.Fatalf("in the VM (rc %d, %v):\n%s", rc, err, lastLines(out, 80))
	}
	for _, name := range strings.Split(strings.Trim(debianKernelTests, "^()$"), "|") {
		if !strings.Contains(out, "--- PASS: "+name+" ") {
			t.Errorf("%s did not pass in the VM:\n%s", name, lastLines(out, 80))
		}
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
