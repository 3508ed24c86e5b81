package cni

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	sub4 = netip.MustParsePrefix("10.9.0.0/29") // 6 usable: .1 … .6
	sub6 = netip.MustParsePrefix("fd09::/120")
)

func reserve(t *testing.T, s *Store, id string, requested ...netip.Addr) (*Allocation, error) {
	t.Helper()
	a := &Allocation{ContainerID: id, IfName: "eth0", HostIf: "bh-" + id, Created: time.Now()}
	return a, s.Reserve(a, requested, []netip.Prefix{sub4, sub6})
}

func TestReserveIsRoundRobinAndSkipsReserved(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	var got []string
	for i := range 6 {
		a, err := reserve(t, s, fmt.Sprint("c", i))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.IPs[0].String())
		if a.IPs[1] != netip.MustParseAddr(fmt.Sprintf("fd09::%d", i+1)) {
			t.Errorf("IPv6 %v, want fd09::%d", a.IPs[1], i+1)
		}
	}
	if strings.Join(got, " ") != "10.9.0.1 10.9.0.2 10.9.0.3 10.9.0.4 10.9.0.5 10.9.0.6" {
		t.Errorf("allocated %v", got)
	}
	if _, err := reserve(t, s, "c6"); errorCode(err) != CodePoolExhausted {
		t.Errorf("7th reservation in a /29 = %v, want code 101", err)
	}
	// A freed address is not handed out again at once: .2 freed, .3 freed;
	// the next comes after the last handed out (.6), wrapping to .2.
	for _, id := range []string{"c1", "c2"} {
		if _, err := s.Release(allocKey(id, "eth0")); err != nil {
			t.Fatal(err)
		}
	}
	a, err := reserve(t, s, "c7")
	if err != nil || a.IPs[0] != netip.MustParseAddr("10.9.0.2") {
		t.Errorf("after freeing .2 and .3: got %v, %v; want 10.9.0.2", a.IPs, err)
	}
	st, _ := s.Read()
	if st.Free(sub4) != 1 {
		t.Errorf("Free = %d, want 1", st.Free(sub4))
	}
}

func TestRequestedAndPending(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	if _, err := reserve(t, s, "a", netip.MustParseAddr("10.9.0.6"), netip.MustParseAddr("fd09::ff")); err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]string{
		"10.9.0.6": "allocated to container a", "10.9.0.7": "broadcast", "10.9.0.0": "network address",
		"10.9.1.1": "outside subnet", "fd09::": "subnet-router anycast",
	} {
		if _, err := reserve(t, s, "b", netip.MustParseAddr(ip)); errorCode(err) != CodeAddressUnavailable || !strings.Contains(err.Error(), want) {
			t.Errorf("request %s: %v, want code 100 with %q", ip, err, want)
		}
	}
	if _, err := reserve(t, s, "a"); errorCode(err) != CodeAlreadyAttached {
		t.Errorf("reserve a twice: %v, want code 104", err)
	}
	// Pending: the address stays taken until DropPending.
	if err := s.MarkPending("a", "eth0", "bh-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := reserve(t, s, "b", netip.MustParseAddr("10.9.0.6")); err == nil || !strings.Contains(err.Error(), "pending") {
		t.Errorf("request a pending address: %v, want refused as pending", err)
	}
	if _, err := reserve(t, s, "a"); errorCode(err) != CodeTryAgainLater {
		t.Errorf("re-ADD a pending attachment: %v, want code 11", err)
	}
	if err := s.DropPending(map[string]bool{"bh-a": true}); err != nil {
		t.Fatal(err)
	}
	if _, err := reserve(t, s, "b", netip.MustParseAddr("10.9.0.6")); err != nil {
		t.Errorf("request after DropPending: %v", err)
	}
}

// Goroutines with their own Store values lock through their own file
// descriptors, as separate plugin processes do.
func TestConcurrentReserve(t *testing.T) {
	dir := t.TempDir()
	sub := []netip.Prefix{netip.MustParsePrefix("10.8.0.0/16")}
	const n = 64
	ips := make([]netip.Addr, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			a := &Allocation{ContainerID: fmt.Sprint("c", i), IfName: "eth0", Created: time.Now()}
			errs[i] = (&Store{Dir: dir}).Reserve(a, nil, sub)
			if errs[i] == nil {
				ips[i] = a.IPs[0]
			}
		})
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for i := range n {
		if errs[i] != nil || seen[ips[i]] {
			t.Fatalf("reservation %d: %v %v (duplicate %v)", i, ips[i], errs[i], seen[ips[i]])
		}
		seen[ips[i]] = true
	}
	st, _ := (&Store{Dir: dir}).Read()
	if len(st.Allocations) != n {
		t.Errorf("%d allocations persisted, want %d", len(st.Allocations), n)
	}
}

func TestStateErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (&Store{Dir: dir}).Read(); errorCode(err) != CodeState || !strings.Contains(err.Error(), "state.json") {
		t.Errorf("corrupt state: %v, want code 106 naming the file", err)
	}
	// A lock held elsewhere: code 11 after the timeout.
	s := &Store{Dir: t.TempDir(), LockTimeout: 50 * time.Millisecond}
	unlock, err := s.lock(true)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := (&Store{Dir: s.Dir, LockTimeout: 50 * time.Millisecond}).Read(); errorCode(err) != CodeTryAgainLater {
		t.Errorf("held lock: %v, want code 11", err)
	}
}

// Addresses held elsewhere (the agent's workloads of other networks) are
// skipped, count as used, and a request for one names its holder.
func TestReserveAvoidsAddressesHeldElsewhere(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	held := map[netip.Addr]string{
		netip.MustParseAddr("10.9.0.1"): "workload shop/db-0",
		netip.MustParseAddr("10.9.0.2"): "workload shop/db-1",
	}
	a := &Allocation{ContainerID: "c1", IfName: "eth0", HostIf: "bh-c1", Created: time.Now()}
	if err := s.ReserveAvoiding(a, nil, []netip.Prefix{sub4}, held); err != nil || a.IPs[0] != netip.MustParseAddr("10.9.0.3") {
		t.Fatalf("reserved %v, %v; want 10.9.0.3", a.IPs, err)
	}
	b := &Allocation{ContainerID: "c2", IfName: "eth0", HostIf: "bh-c2", Created: time.Now()}
	err := s.ReserveAvoiding(b, []netip.Addr{netip.MustParseAddr("10.9.0.2")}, []netip.Prefix{sub4}, held)
	if errorCode(err) != CodeAddressUnavailable || !strings.Contains(err.Error(), "shop/db-1") {
		t.Errorf("requesting a held address: %v, want 100 naming shop/db-1", err)
	}
	st, _ := s.Read()
	if st.Allocations["c2/eth0"] != nil {
		t.Error("the refused request was recorded")
	}
	// 6 usable, 2 held elsewhere, 1 ours: 3 left, then none.
	for i := range 3 {
		c := &Allocation{ContainerID: fmt.Sprint("d", i), IfName: "eth0", Created: time.Now()}
		if err := s.ReserveAvoiding(c, nil, []netip.Prefix{sub4}, held); err != nil {
			t.Fatal(err)
		}
		if held[c.IPs[0]] != "" {
			t.Errorf("allocated %v, which is held elsewhere", c.IPs[0])
		}
	}
	c := &Allocation{ContainerID: "full", IfName: "eth0", Created: time.Now()}
	if err := s.ReserveAvoiding(c, nil, []netip.Prefix{sub4}, held); errorCode(err) != CodePoolExhausted {
		t.Errorf("a full subnet: %v, want 101", err)
	}
}

// The remembered namespaces are bounded: the oldest are forgotten first,
// and how many is told.
func TestRememberedNamespacesAreBounded(t *testing.T) {
	st := &State{Namespaces: map[string]*KnownNamespace{}}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10 {
		st.Namespaces[fmt.Sprintf("c%d", i)] = &KnownNamespace{Namespace: "shop", Seen: base.Add(time.Duration(i) * time.Second)}
	}
	if n := st.forgetOldNamespaces(7); n != 3 {
		t.Fatalf("forgot %d, want 3", n)
	}
	for i := range 10 {
		_, kept := st.Namespaces[fmt.Sprintf("c%d", i)]
		if kept != (i >= 3) {
			t.Errorf("c%d kept = %v; want the 7 newest kept", i, kept)
		}
	}
	if n := st.forgetOldNamespaces(7); n != 0 {
		t.Errorf("forgot %d within the bound", n)
	}
}
