package dptest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// attackWorld is the cast of the attack tests: mallory (root in its own
// namespace) and three victims.
type attackWorld struct {
	*World
	k                       *KernelHost
	mallory, db, web, cache *WL
}

func newAttackWorld(t *testing.T, h *KernelHarness) *attackWorld {
	w := NewWorld(t, h)
	a := &attackWorld{World: w, k: w.Host.(*KernelHost)}
	a.mallory = w.Add("app/mallory", "app=mallory", "10.81.0.1 fd81::1", "")
	a.db = w.Add("app/db", "app=db", "10.81.0.2 fd81::2", "")
	a.web = w.Add("app/web", "app=web", "10.81.0.3 fd81::3", "")
	a.cache = w.Add("app/cache", "app=cache", "10.81.0.4 fd81::4", "")
	w.Apply(denyIngress + `---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: db, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: db}}}
  ingress: [{action: allow, services: [{protocol: tcp, port: 5432}, {protocol: udp, port: 53}]}]
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: web, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: web}}}
  ingress: [{action: allow, services: [{protocol: tcp, port: 80}]}]
---
apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: cache, namespace: app}
spec:
  appliesTo: {selector: {matchLabels: {app: cache}}}
  ingress: [{action: allow, from: [{selector: {matchLabels: {app: web}}}], services: [{protocol: tcp, port: 6379}]}]
`)
	return a
}

// Attacks runs the attack tests against a kernel dataplane: a workload
// with root and CAP_NET_ADMIN in its own namespace flushes its rules,
// spoofs, floods and scans; nothing the policy denies gets through, and
// the other workloads are unaffected.
func Attacks(t *testing.T, h *KernelHarness) {
	t.Run("FlushOwnRuleset", func(t *testing.T) { attackFlush(newAttackWorld(t, h)) })
	t.Run("Spoof", func(t *testing.T) { attackSpoof(newAttackWorld(t, h)) })
	t.Run("Flood", func(t *testing.T) { attackFlood(newAttackWorld(t, h)) })
	t.Run("Scan", func(t *testing.T) { attackScan(newAttackWorld(t, h)) })
}

// attackFlush: mallory flushes every table of its own namespace through
// netlink and installs an accept-all; enforcement is in the host
// namespace, so nothing changes.
func attackFlush(a *attackWorld) {
	a.Expect(a.mallory, a.cache.V4(), "tcp/6379", Dropped)
	fd, err := os.Open(a.k.EndpointNS(a.mallory.Name).Path())
	if err != nil {
		a.T.Fatal(err)
	}
	defer fd.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(fd.Fd())))
	if err != nil {
		a.T.Fatal(err)
	}
	c.FlushRuleset()
	tbl := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "mallory"})
	accept := nftables.ChainPolicyAccept
	for _, hook := range []*nftables.ChainHook{nftables.ChainHookInput, nftables.ChainHookOutput, nftables.ChainHookForward} {
		ch := c.AddChain(&nftables.Chain{Name: fmt.Sprintf("h%d", *hook), Table: tbl, Type: nftables.ChainTypeFilter,
			Hooknum: hook, Priority: nftables.ChainPriorityFirst, Policy: &accept})
		c.AddRule(&nftables.Rule{Table: tbl, Chain: ch, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}})
	}
	if err := c.Flush(); err != nil {
		a.T.Fatalf("mallory's own netlink flush failed: %v", err)
	}
	a.Expect(a.mallory, a.cache.V4(), "tcp/6379", Dropped)
	a.Expect(a.mallory, a.cache.V6(), "tcp/6379", Dropped)
	a.Expect(a.mallory, a.db.V4(), "tcp/22", Dropped)
	a.Expect(a.mallory, a.db.V4(), "tcp/5432", Connected)
	a.Expect(a.web, a.cache.V4(), "tcp/6379", Connected)
}

// attackSpoof: mallory sends from other workloads' addresses, with an
// address added to its own interface and with a raw forged SYN.
func attackSpoof(a *attackWorld) {
	before := a.Counters().Spoofed.Packets
	a.Spoof(a.mallory, a.web.V4(), a.db.V4(), 53, Dropped)
	a.Spoof(a.mallory, a.web.V6(), a.db.V6(), 53, Dropped)
	a.Spoof(a.mallory, a.mallory.V4(), a.db.V4(), 53, Connected)
	// A forged SYN from web to db's open port: if it got through, db's
	// TCP would count it (and answer web).
	dbNS := a.k.EndpointNS(a.db.Name)
	segs := func() int {
		n, err := tcpInSegs(dbNS)
		if err != nil {
			a.T.Fatal(err)
		}
		return n
	}
	if err := a.k.Listen(a.db.V4(), policy.TCP, 5432); err != nil {
		a.T.Fatal(err)
	}
	in0 := segs()
	err := a.k.EndpointNS(a.mallory.Name).Do(func() error {
		for i := 0; i < 5; i++ {
			if err := sendRawSYN(a.web.V4(), a.db.V4(), uint16(40000+i), 5432); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		a.T.Fatal(err)
	}
	// Wait until the dataplane has counted the forged SYNs (two spoofs
	// above, five here) as dropped for spoofing: then none is still on its
	// way to db. A dataplane that lets them through never counts them, and
	// the checks below fail after the wait.
	for deadline := time.Now().Add(10 * DropTimeout); a.Counters().Spoofed.Packets < before+7 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if in := segs(); in != in0 {
		a.T.Errorf("db received %d TCP segments from forged SYNs, want 0", in-in0)
	}
	if after := a.Counters().Spoofed.Packets; after < before+7 {
		a.T.Errorf("spoofed packets counted %d -> %d, want at least 7 more", before, after)
	}
	a.Expect(a.web, a.db.V4(), "tcp/5432", Connected)
}

// tcpInSegs reads the TCP InSegs counter of a namespace.
func tcpInSegs(ns *netns.NS) (int, error) {
	var n int
	err := ns.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		var names []string
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(line, "Tcp:") {
				continue
			}
			f := strings.Fields(line)[1:]
			if names == nil {
				names = f
				continue
			}
			for i, name := range names {
				if name == "InSegs" && i < len(f) {
					n, err = strconv.Atoi(f[i])
					return err
				}
			}
		}
		return errors.New("no Tcp InSegs in /proc/net/snmp")
	})
	return n, err
}

// sendRawSYN sends an IPv4 TCP SYN with a forged source from a raw socket
// (the kernel fills in the IP checksum and length).
func sendRawSYN(src, dst netip.Addr, sport, dport uint16) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("dptest: raw socket: %w", err)
	}
	defer unix.Close(fd)
	pkt := make([]byte, 40)
	pkt[0], pkt[8], pkt[9] = 0x45, 64, unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(pkt[2:], 40)
	s4, d4 := src.As4(), dst.As4()
	copy(pkt[12:16], s4[:])
	copy(pkt[16:20], d4[:])
	tcp := pkt[20:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], 0x1000+uint32(sport))
	tcp[12], tcp[13] = 5<<4, 0x02 // header length 20, SYN
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	binary.BigEndian.PutUint16(tcp[16:], tcpChecksum(s4, d4, tcp))
	if err := unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: d4}); err != nil {
		return fmt.Errorf("dptest: send forged SYN: %w", err)
	}
	return nil
}

func tcpChecksum(src, dst [4]byte, seg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src[:])
	add(dst[:])
	add([]byte{0, unix.IPPROTO_TCP, byte(len(seg) >> 8), byte(len(seg))})
	add(seg)
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// FloodSize is the number of connection attempts of the flood, half to a
// denied and half to an allowed port, all started within FloodTime.
const (
	FloodSize = 3000
	FloodTime = 3 * time.Second
)

// attackFlood: mallory opens FloodSize connections at once; the denied
// ones never connect, and meanwhile web's connections to db succeed.
func attackFlood(a *attackWorld) {
	for _, p := range []int{22, 5432} {
		if err := a.k.Listen(a.db.V4(), policy.TCP, p); err != nil {
			a.T.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(a.ctx, FloodTime+5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var victimTries int
	var victimFails []string
	wg.Add(1)
	go func() {
		defer wg.Done()
		end := time.Now().Add(FloodTime)
		for time.Now().Before(end) && ctx.Err() == nil && victimTries < 1000 {
			o, detail, err := a.Host.Try(ctx, Try{From: a.web.Name, To: a.db.V4(), Protocol: policy.TCP, Port: 5432, Timeout: time.Second})
			victimTries++
			if err != nil || o != Connected {
				victimFails = append(victimFails, fmt.Sprintf("%s (%s) %v", o, detail, err))
			}
		}
	}()
	var denied, allowed scanResult
	err := a.k.EndpointNS(a.mallory.Name).Do(func() error {
		var err error
		ports := make([]int, FloodSize/2)
		for i := range ports {
			ports[i] = 22
		}
		// The attempts all start at once; SYNs are retried after 1 s.
		if denied, err = connectMany(a.db.V4(), ports, FloodTime/2); err != nil {
			return err
		}
		for i := range ports {
			ports[i] = 5432
		}
		allowed, err = connectMany(a.db.V4(), ports, FloodTime/2)
		return err
	})
	wg.Wait()
	if err != nil {
		a.T.Fatal(err)
	}
	if denied.connected+denied.refused > 0 {
		a.T.Errorf("flood to a denied port: %d connected, %d refused, want all %d dropped", denied.connected, denied.refused, FloodSize/2)
	}
	if len(victimFails) > 0 {
		a.T.Errorf("%d of web's %d connections to db failed during the flood; first: %s", len(victimFails), victimTries, victimFails[0])
	}
	a.T.Logf("flood: %d to a denied port: all dropped; %d to an allowed port: %d connected; web -> db meanwhile: %d of %d connected",
		FloodSize/2, FloodSize/2, allowed.connected, victimTries-len(victimFails), victimTries)
}

// scanResult counts the outcomes of many non-blocking connects; byPort
// holds each port's outcome (the last one when a port repeats).
type scanResult struct {
	connected, refused, dropped int
	byPort                      map[int]Outcome
}

// connectMany starts a non-blocking TCP connect to every port at once
// and waits up to timeout for them all. It runs in the caller's
// namespace.
func connectMany(dst netip.Addr, ports []int, timeout time.Duration) (scanResult, error) {
	res := scanResult{byPort: map[int]Outcome{}}
	family := unix.AF_INET6
	if dst.Is4() {
		family = unix.AF_INET
	}
	fds := make([]unix.PollFd, 0, len(ports))
	defer func() {
		for _, p := range fds {
			unix.Close(int(p.Fd))
		}
	}()
	for _, port := range ports {
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return res, fmt.Errorf("dptest: socket: %w", err)
		}
		fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLOUT})
		var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: dst.As16(), Port: port}
		if dst.Is4() {
			sa = &unix.SockaddrInet4{Addr: dst.As4(), Port: port}
		}
		if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
			return res, fmt.Errorf("dptest: connect %v:%d: %w", dst, port, err)
		}
	}
	outcome := make([]Outcome, len(fds))
	end := time.Now().Add(timeout)
	for pending := len(fds); pending > 0 && time.Now().Before(end); {
		wait := make([]unix.PollFd, 0, pending)
		idx := make([]int, 0, pending)
		for i, p := range fds {
			if outcome[i] == 0 {
				wait = append(wait, p)
				idx = append(idx, i)
			}
		}
		n, err := unix.Poll(wait, int(time.Until(end).Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return res, fmt.Errorf("dptest: poll: %w", err)
		}
		if n == 0 {
			break
		}
		for j, p := range wait {
			if p.Revents == 0 {
				continue
			}
			soerr, _ := unix.GetsockoptInt(int(p.Fd), unix.SOL_SOCKET, unix.SO_ERROR)
			outcome[idx[j]] = Connected
			if soerr != 0 {
				outcome[idx[j]] = Refused
			}
			pending--
		}
	}
	for i, o := range outcome {
		if o == 0 {
			o = Dropped
		}
		switch o {
		case Connected:
			res.connected++
		case Refused:
			res.refused++
		default:
			res.dropped++
		}
		res.byPort[ports[i]] = o
	}
	return res, nil
}

// attackScan: mallory tries every other workload on TCP ports 1 to 1024
// (and the services' ports) and a few UDP ports: exactly what the policy
// allows answers; everything it denies stays silent.
func attackScan(a *attackWorld) {
	ports := make([]int, 0, 1030)
	for p := 1; p <= 1024; p++ {
		ports = append(ports, p)
	}
	ports = append(ports, 5432, 6379)
	for _, v := range []*WL{a.db, a.web, a.cache} {
		for _, p := range []int{22, 80, 443, 5432, 6379} {
			if err := a.k.Listen(v.V4(), policy.TCP, p); err != nil {
				a.T.Fatal(err)
			}
		}
	}
	// Every target at once, each from its own thread in mallory's namespace.
	type target struct {
		v   *WL
		dst netip.Addr
		res scanResult
		err error
	}
	var targets []*target
	for _, v := range []*WL{a.db, a.web, a.cache} {
		targets = append(targets, &target{v: v, dst: v.V4()}, &target{v: v, dst: v.V6()})
	}
	var wg sync.WaitGroup
	for _, tg := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tg.err = a.k.EndpointNS(a.mallory.Name).Do(func() error {
				var err error
				tg.res, err = connectMany(tg.dst, ports, 2*DropTimeout)
				return err
			})
		}()
	}
	wg.Wait()
	for _, tg := range targets {
		if tg.err != nil {
			a.T.Fatal(tg.err)
		}
		bad := 0
		for _, p := range ports {
			want := OutcomeOf(dataplane.Enforced(a.Verdict(a.mallory, tg.dst, "tcp/"+strconv.Itoa(p))))
			got := tg.res.byPort[p]
			// An allowed port without a listener answers with a reset.
			ok := got == want || (want == Connected && got == Refused)
			if !ok && bad < 10 {
				a.T.Errorf("scan %s tcp/%d: %s, the policy says %s", tg.dst, p, got, want)
			}
			if !ok {
				bad++
			}
		}
		a.T.Logf("scan %v: %d ports, %d connected, %d refused, %d dropped; %d wrong",
			tg.dst, len(ports), tg.res.connected, tg.res.refused, tg.res.dropped, bad)
	}
	for _, v := range []*WL{a.db, a.web, a.cache} {
		for _, p := range []int{53, 161} {
			a.Expect(a.mallory, v.V4(), "udp/"+strconv.Itoa(p), OutcomeOf(dataplane.Enforced(a.Verdict(a.mallory, v.V4(), "udp/"+strconv.Itoa(p)))))
		}
	}
}
