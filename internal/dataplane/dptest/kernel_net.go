package dptest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// server is a listener inside an endpoint's namespace. Its sockets were
// created there and stay there, whichever thread serves them later.
type server struct {
	proto policy.Protocol
	ln    net.Listener   // TCP, SCTP
	pc    net.PacketConn // UDP

	mu    sync.Mutex
	seen  map[string]netip.Addr // UDP payloads received, with their source
	conns map[net.Conn]struct{}
}

// startServer runs in the endpoint's namespace.
func startServer(proto policy.Protocol, port int) (*server, error) {
	s := &server{proto: proto, seen: map[string]netip.Addr{}, conns: map[net.Conn]struct{}{}}
	var err error
	switch proto {
	case policy.TCP:
		s.ln, err = net.Listen("tcp", fmt.Sprintf("[::]:%d", port))
	case policy.SCTP:
		s.ln, err = sctpListen(port)
	case policy.UDP:
		s.pc, err = net.ListenPacket("udp", fmt.Sprintf("[::]:%d", port))
	default:
		err = fmt.Errorf("no server for %v", proto)
	}
	if err != nil {
		return nil, err
	}
	if s.pc != nil {
		go s.echoPackets()
	} else {
		go s.accept()
	}
	return s, nil
}

func (s *server) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		go func() {
			_, _ = io.Copy(c, c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

func (s *server) echoPackets() {
	buf := make([]byte, 2048)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if ua, ok := from.(*net.UDPAddr); ok {
			s.mu.Lock()
			if len(s.seen) < 100000 {
				s.seen[string(buf[:n])] = ua.AddrPort().Addr().Unmap()
			}
			s.mu.Unlock()
		}
		_, _ = s.pc.WriteTo(buf[:n], from)
	}
}

// received waits up to timeout for a datagram carrying token.
func (s *server) received(token string, timeout time.Duration) (netip.Addr, bool) {
	end := time.Now().Add(timeout)
	for {
		s.mu.Lock()
		a, ok := s.seen[token]
		s.mu.Unlock()
		if ok || time.Now().After(end) {
			return a, ok
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *server) close() {
	if s.ln != nil {
		s.ln.Close()
	}
	if s.pc != nil {
		s.pc.Close()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}

func token() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "bh-" + hex.EncodeToString(b)
}

// dial runs in the source's namespace: one new connection and one round
// trip.
func dial(tr Try, timeout time.Duration, srv *server) (Outcome, string, error) {
	switch tr.Protocol {
	case policy.TCP, policy.UDP:
		c, o, detail, err := connect(tr, timeout)
		if c == nil {
			return o, detail, err
		}
		defer c.Close()
		return exchange(c, timeout)
	case policy.SCTP:
		return sctpDial(tr.To, tr.Port, timeout)
	case policy.ICMP, policy.ICMPv6:
		return ping(tr.To, timeout)
	}
	return 0, "", fmt.Errorf("dptest: dial %v: %w", tr.Protocol, ErrUnsupported)
}

func connect(tr Try, timeout time.Duration) (net.Conn, Outcome, string, error) {
	to := netip.AddrPortFrom(tr.To, uint16(tr.Port)).String()
	d := net.Dialer{Timeout: timeout}
	network := "tcp"
	if tr.Protocol == policy.UDP {
		network = "udp"
	}
	c, err := d.Dial(network, to)
	if err != nil {
		o, detail, err := classify(err)
		return nil, o, "connect: " + detail, err
	}
	return c, 0, "", nil
}

// exchange makes one round trip of a token through the echo server.
func exchange(c net.Conn, timeout time.Duration) (Outcome, string, error) {
	tok := token()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(tok)); err != nil {
		o, detail, err := classify(err)
		return o, "write: " + detail, err
	}
	buf := make([]byte, len(tok))
	if _, err := io.ReadFull(c, buf); err != nil {
		o, detail, err := classify(err)
		return o, "echo: " + detail, err
	}
	if string(buf) != tok {
		return 0, "", fmt.Errorf("dptest: echo returned %q, sent %q", buf, tok)
	}
	return Connected, "echoed", nil
}

// classify turns a socket error into the outcome it shows; anything else
// is the harness's own failure.
func classify(err error) (Outcome, string, error) {
	var ne net.Error
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return Dropped, "timeout", nil
	// ECONNREFUSED: a TCP reset or a port unreachable; EHOSTUNREACH and
	// EACCES: host or administratively prohibited (ICMP, ICMPv6).
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EHOSTDOWN), errors.Is(err, syscall.EPROTO), errors.Is(err, syscall.EACCES):
		return Refused, err.Error(), nil
	}
	return 0, "", fmt.Errorf("dptest: %w", err)
}

type kConn struct {
	c       net.Conn
	timeout time.Duration
}

func openConn(tr Try, timeout time.Duration) (Conn, error) {
	c, o, detail, err := connect(tr, timeout)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, fmt.Errorf("dptest: open %v %v/%d: %s (%s)", tr.To, tr.Protocol, tr.Port, o, detail)
	}
	if o, detail, err := exchange(c, timeout); o != Connected {
		c.Close()
		return nil, fmt.Errorf("dptest: open %v %v/%d: first round trip: %s (%s) %v", tr.To, tr.Protocol, tr.Port, o, detail, err)
	}
	return &kConn{c: c, timeout: timeout}, nil
}

func (k *kConn) Exchange(context.Context) (Outcome, error) {
	o, _, err := exchange(k.c, k.timeout)
	return o, err
}

func (k *kConn) Close() error { return k.c.Close() }

// ping sends one ICMP or ICMPv6 echo request from a ping socket (which
// needs net.ipv4.ping_group_range, set at attach) and waits for the reply
// or an error. A connected ping socket reports ICMP unreachables.
func ping(to netip.Addr, timeout time.Duration) (Outcome, string, error) {
	family, proto, typ := unix.AF_INET6, unix.IPPROTO_ICMPV6, byte(128)
	var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: to.As16()}
	if to.Is4() {
		family, proto, typ = unix.AF_INET, unix.IPPROTO_ICMP, 8
		sa = &unix.SockaddrInet4{Addr: to.As4()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return 0, "", fmt.Errorf("dptest: ping socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, sa); err != nil {
		return 0, "", fmt.Errorf("dptest: ping connect %v: %w", to, err)
	}
	msg := []byte{typ, 0, 0, 0, 0, 0, 0, 1, 'b', 'h'}
	if _, err := unix.Write(fd, msg); err != nil {
		return 0, "", fmt.Errorf("dptest: ping %v: %w", to, err)
	}
	ok, err := waitFD(fd, unix.POLLIN, timeout)
	if err != nil {
		return 0, "", err
	}
	if !ok {
		return Dropped, "timeout", nil
	}
	buf := make([]byte, 1500)
	n, err := unix.Read(fd, buf)
	if err != nil {
		o, detail, err := classify(err)
		return o, "ping: " + detail, err
	}
	if n < 1 || (buf[0] != 0 && buf[0] != 129) {
		return 0, "", fmt.Errorf("dptest: ping %v: unexpected ICMP type %d", to, buf[0])
	}
	return Connected, "echo reply", nil
}

// waitFD polls fd for events, retrying interrupted polls, until timeout.
func waitFD(fd int, events int16, timeout time.Duration) (bool, error) {
	end := time.Now().Add(timeout)
	for {
		left := time.Until(end)
		if left <= 0 {
			return false, nil
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("dptest: poll: %w", err)
		}
		return n > 0, nil
	}
}

// sctpSupported probes the kernel for SCTP.
func sctpSupported() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		return fmt.Errorf("this kernel has no SCTP: socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP): %w", err)
	}
	unix.Close(fd)
	return nil
}

func sctpListen(port int) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, unix.IPPROTO_SCTP)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "sctp")
	defer f.Close()
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
	if err := unix.Bind(fd, &unix.SockaddrInet6{Port: port}); err != nil {
		return nil, err
	}
	if err := unix.Listen(fd, 128); err != nil {
		return nil, err
	}
	return net.FileListener(f) // accepts through Go's poller
}

// sctpDial connects without blocking and waits for the association or an
// error.
func sctpDial(to netip.Addr, port int, timeout time.Duration) (Outcome, string, error) {
	family := unix.AF_INET6
	var sa unix.Sockaddr = &unix.SockaddrInet6{Addr: to.As16(), Port: port}
	if to.Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: to.As4(), Port: port}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.IPPROTO_SCTP)
	if err != nil {
		return 0, "", fmt.Errorf("dptest: sctp socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return classify(err)
	}
	ok, err := waitFD(fd, unix.POLLOUT, timeout)
	if err != nil || !ok {
		return Dropped, "timeout", err
	}
	soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return 0, "", fmt.Errorf("dptest: sctp SO_ERROR: %w", err)
	}
	if soerr != 0 {
		return classify(syscall.Errno(soerr))
	}
	return Connected, "association up", nil
}

// trySpoofed sends one UDP datagram from tr.Spoof: the address is added to
// the source's own interface (as root in its namespace could) and the
// socket bound to it.
func (h *KernelHost) trySpoofed(src *kEndpoint, tr Try, timeout time.Duration) (Outcome, string, error) {
	if tr.Protocol != policy.UDP {
		return 0, "", fmt.Errorf("dptest: spoofing sends UDP, not %v: %w", tr.Protocol, ErrUnsupported)
	}
	srv, err := h.server(tr.To, policy.UDP, tr.Port)
	if err != nil {
		return 0, "", err
	}
	tok := token()
	err = src.ns.Do(func() error { return sendSpoofed(tr, tok) })
	if err != nil {
		return 0, "", err
	}
	if from, ok := srv.received(tok, timeout); ok {
		return Connected, "delivered from " + from.String(), nil
	}
	return Dropped, "not delivered", nil
}

// sendSpoofed runs in the source's namespace.
func sendSpoofed(tr Try, tok string) error {
	link, err := netlink.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("dptest: spoof: %w", err)
	}
	bits := tr.Spoof.BitLen()
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: tr.Spoof.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
	if tr.Spoof.Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	switch err := netlink.AddrAdd(link, addr); {
	case errors.Is(err, unix.EEXIST): // its own: leave it
	case err != nil:
		return fmt.Errorf("dptest: spoof: add %v: %w", tr.Spoof, err)
	default:
		// Removing the workload's own (primary) address would take its
		// routes with it; this one was added here.
		defer netlink.AddrDel(link, addr)
	}
	c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tr.Spoof, 0)),
		net.UDPAddrFromAddrPort(netip.AddrPortFrom(tr.To, uint16(tr.Port))))
	if err != nil {
		return fmt.Errorf("dptest: spoof: bind %v: %w", tr.Spoof, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(tok)); err != nil {
		return fmt.Errorf("dptest: spoof: send: %w", err)
	}
	return nil
}
