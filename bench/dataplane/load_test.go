package benchdataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// msgSize is the size of a CRR request and of its response.
const msgSize = 64

// Bounds on every loop: no round runs longer than its duration plus the
// dial timeout, and no client opens more than maxConns connections.
const (
	dialTimeout = 2 * time.Second
	maxConns    = 2_000_000
	bulkChunk   = 256 << 10
)

// server answers two kinds of connections, told apart by the first byte:
// 'r' a CRR request (read msgSize bytes, answer msgSize bytes, close) and
// 'b' a bulk stream (read to EOF, answer the byte count, close).
type server struct {
	ln net.Listener
	wg sync.WaitGroup
}

// startServer listens inside ns: a socket keeps the namespace it was
// created in, so the accept loop can run on any thread.
func startServer(ns *netns.NS, addr netip.AddrPort) (*server, error) {
	var ln net.Listener
	err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", addr.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("bench: listen on %v in %s: %w", addr, ns.Name, err)
	}
	s := &server{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.handle(c)
		}
	}()
	return s, nil
}

func (s *server) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	var req [msgSize]byte
	if _, err := io.ReadFull(c, req[:1]); err != nil {
		return
	}
	if req[0] == 'b' {
		n, _ := io.CopyBuffer(io.Discard, c, make([]byte, bulkChunk))
		var out [8]byte
		binary.BigEndian.PutUint64(out[:], uint64(n+1))
		_, _ = c.Write(out[:])
		return
	}
	if _, err := io.ReadFull(c, req[1:]); err != nil {
		return
	}
	_, _ = c.Write(req[:])
}

// Close stops accepting; connections in progress end by themselves.
func (s *server) Close() {
	_ = s.ln.Close()
	s.wg.Wait()
}

// crrResult is what one or more CRR runs measured.
type crrResult struct {
	Conns, Errors int
	Elapsed       time.Duration
	P50, P99      time.Duration // connect + request + response
	lats          []time.Duration
}

// Rate is connections per second.
func (r crrResult) Rate() float64 { return float64(r.Conns) / r.Elapsed.Seconds() }

// merge adds run o to r: counts and times add up, percentiles are those
// of all the connections together.
func (r crrResult) merge(o crrResult) crrResult {
	r.Conns += o.Conns
	r.Errors += o.Errors
	r.Elapsed += o.Elapsed
	r.lats = append(r.lats, o.lats...)
	slices.Sort(r.lats)
	if len(r.lats) > 0 {
		r.P50, r.P99 = r.lats[len(r.lats)/2], r.lats[len(r.lats)*99/100]
	}
	return r
}

// crr runs clients concurrent clients inside ns for d, each opening a
// connection to dst, sending msgSize bytes, reading msgSize bytes back and
// closing, as fast as it can.
func crr(ns *netns.NS, dst netip.AddrPort, clients int, d time.Duration) (crrResult, error) {
	start := time.Now()
	deadline := start.Add(d)
	lats := make([][]time.Duration, clients)
	errs := make([]int, clients)
	fails := make([]error, clients)
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The client thread stays in ns for the whole round: every
			// socket it creates is the client workload's.
			fails[i] = ns.Do(func() error {
				lats[i], errs[i] = crrClient(dst, deadline)
				return nil
			})
		}()
	}
	wg.Wait()
	res := crrResult{Elapsed: time.Since(start)}
	var all []time.Duration
	for i := range lats {
		if fails[i] != nil {
			return res, fails[i]
		}
		all = append(all, lats[i]...)
		res.Errors += errs[i]
	}
	res.Conns = len(all)
	if res.Conns == 0 {
		return res, fmt.Errorf("bench: crr to %v from %s: no connection completed (%d errors)", dst, ns.Name, res.Errors)
	}
	return crrResult{}.merge(crrResult{Conns: res.Conns, Errors: res.Errors, Elapsed: res.Elapsed, lats: all}), nil
}

// crrClient loops until deadline. It closes with SO_LINGER 0: the close
// sends a reset, so no TIME_WAIT is left in the client namespace and the
// ephemeral ports never run out; the server closes first anyway, right
// after its answer.
func crrClient(dst netip.AddrPort, deadline time.Time) (lats []time.Duration, errs int) {
	d := net.Dialer{Timeout: dialTimeout}
	req := make([]byte, msgSize)
	req[0] = 'r'
	resp := make([]byte, msgSize)
	lats = make([]time.Duration, 0, 1<<15)
	for n := 0; n < maxConns && time.Now().Before(deadline); n++ {
		t0 := time.Now()
		c, err := d.Dial("tcp4", dst.String())
		if err != nil {
			errs++
			continue
		}
		_ = c.SetDeadline(t0.Add(dialTimeout))
		_, err = c.Write(req)
		if err == nil {
			_, err = io.ReadFull(c, resp)
		}
		el := time.Since(t0)
		_ = c.(*net.TCPConn).SetLinger(0)
		_ = c.Close()
		if err != nil {
			errs++
			continue
		}
		lats = append(lats, el)
	}
	return lats, errs
}

// bulkResult is what one or more bulk runs measured: the bytes the server
// counted, over the time until its count arrived back (so that every byte
// was received).
type bulkResult struct {
	Bytes   uint64
	Elapsed time.Duration
}

// Gbps is the throughput in Gbit/s.
func (r bulkResult) Gbps() float64 { return float64(r.Bytes) * 8 / r.Elapsed.Seconds() / 1e9 }

func (r bulkResult) merge(o bulkResult) bulkResult {
	return bulkResult{Bytes: r.Bytes + o.Bytes, Elapsed: r.Elapsed + o.Elapsed}
}

// bulk streams from ns to dst over one TCP connection for d.
func bulk(ns *netns.NS, dst netip.AddrPort, d time.Duration) (bulkResult, error) {
	var res bulkResult
	err := ns.Do(func() error {
		start := time.Now()
		c, err := net.DialTimeout("tcp4", dst.String(), dialTimeout)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(start.Add(d + 30*time.Second))
		buf := make([]byte, bulkChunk)
		buf[0] = 'b'
		for i := 0; i < 1<<24 && time.Since(start) < d; i++ {
			if _, err := c.Write(buf); err != nil {
				return err
			}
		}
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			return err
		}
		var out [8]byte
		if _, err := io.ReadFull(c, out[:]); err != nil {
			return err
		}
		res = bulkResult{Bytes: binary.BigEndian.Uint64(out[:]), Elapsed: time.Since(start)}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("bench: bulk to %v from %s: %w", dst, ns.Name, err)
	}
	if res.Bytes == 0 {
		return res, errors.New("bench: bulk: nothing arrived")
	}
	return res, nil
}

// dialOnce opens one connection from the calling thread's namespace.
func dialOnce(dst netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp4", dst.String(), timeout)
}
