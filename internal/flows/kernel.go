package flows

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	gonflog "github.com/florianl/go-nflog/v2"
	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// ctEvent is one conntrack event as the reader saw it.
type ctEvent struct {
	flow *conntrack.Flow
	typ  uint8 // conntrack.EventNew, EventUpdate, EventDestroy
	at   time.Time
}

// The conntrack multicast groups (NFNLGRP_CONNTRACK_NEW, _UPDATE, _DESTROY).
var ctGroups = []uint32{1, ctGroupUpdate, 3}

const ctGroupUpdate = 2

// openConntrack subscribes to the namespace's conntrack events. The
// socket asks for reliable delivery (NETLINK_BROADCAST_ERROR): when a
// DESTROY event cannot be delivered because the socket is full, the
// kernel keeps the entry and delivers the event again later, so a
// connection's record is not lost to an overrun; NEW and UPDATE events
// can be, and each overrun is counted (ENOBUFS).
func (c *Collector) openConntrack() error {
	// A fixed receive buffer: one recvmsg per event, not a peek for its
	// size first (events are well under 8 KiB).
	cfg := &netlink.Config{MessageBufferSize: 8192}
	if c.cfg.NetNS != "" {
		f, err := os.Open(c.cfg.NetNS)
		if err != nil {
			return fmt.Errorf("flows: open network namespace %s: %w", c.cfg.NetNS, err)
		}
		defer f.Close() // the socket keeps the namespace
		cfg.NetNS = int(f.Fd())
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return fmt.Errorf("flows: conntrack events: dial netlink: %w", err)
	}
	for _, g := range ctGroups {
		if g == ctGroupUpdate && c.cfg.SkipUpdates {
			continue
		}
		if err := conn.JoinGroup(g); err != nil {
			conn.Close()
			return fmt.Errorf("flows: conntrack events: join group %d: %w", g, err)
		}
	}
	if err := conn.SetOption(netlink.BroadcastError, true); err != nil {
		conn.Close()
		return fmt.Errorf("flows: conntrack events: reliable delivery: %w", err)
	}
	if err := forceReadBuffer(conn, c.cfg.ReadBuffer); err != nil {
		conn.Close()
		return fmt.Errorf("flows: conntrack events: %w", err)
	}
	c.ct = conn
	return nil
}

// forceReadBuffer sets a socket's receive buffer beyond net.core.rmem_max
// (SO_RCVBUFFORCE, as root), or as far as rmem_max allows without.
func forceReadBuffer(conn *netlink.Conn, n int) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return fmt.Errorf("read buffer: %w", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	}); err != nil {
		return fmt.Errorf("read buffer: %w", err)
	}
	if serr != nil {
		return conn.SetReadBuffer(n)
	}
	return nil
}

// readConntrack reads events until the socket is closed. It blocks when
// the assembler is behind: the kernel then holds DESTROY events back
// (see openConntrack) rather than anything being dropped here.
func (c *Collector) readConntrack() {
	defer c.reader.Done()
	defer close(c.events)
	var errs uint64
	for {
		msgs, err := c.ct.Receive()
		if err != nil {
			switch {
			case errors.Is(err, unix.ENOBUFS):
				c.lose(LostConntrackENOBUFS, 1)
				continue
			case closedErr(err):
				return
			}
			if errs++; errs&(errs-1) == 0 { // the 1st, 2nd, 4th, 8th...: not a log line per event
				c.log.Warn("conntrack events: receive", "err", err, "errors", errs)
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		now := time.Now()
		for _, m := range msgs {
			var ev conntrack.Event
			if err := ev.Unmarshal(m); err != nil || ev.Flow == nil {
				continue // not a connection (an expectation) or not conntrack's
			}
			c.events <- ctEvent{flow: ev.Flow, typ: uint8(ev.Type), at: now}
		}
	}
}

func closedErr(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, unix.EBADF) ||
		strings.Contains(err.Error(), "use of closed")
}

// logRec is one NFLOG record as the reader saw it.
type logRec struct {
	hit    Hit
	k      key
	length uint64
	at     time.Time
}

// openNFLOG binds the dataplane's NFLOG group in the namespace, with
// sequence numbers, so that records the kernel built but could not
// deliver are counted exactly.
func (c *Collector) openNFLOG(ctx context.Context) error {
	cfg := &gonflog.Config{Group: c.cfg.LogGroup, Copymode: gonflog.CopyPacket, Bufsize: 128,
		Flags: gonflog.FlagSeq, QThresh: 64, Timeout: 5} // at most 50 ms late
	if c.cfg.NetNS != "" {
		f, err := os.Open(c.cfg.NetNS)
		if err != nil {
			return fmt.Errorf("flows: open network namespace %s: %w", c.cfg.NetNS, err)
		}
		defer f.Close()
		cfg.NetNS = int(f.Fd())
	}
	nf, err := gonflog.Open(cfg)
	if err != nil {
		return fmt.Errorf("flows: nflog group %d: %w", c.cfg.LogGroup, err)
	}
	if err := forceReadBuffer(nf.Con, c.cfg.ReadBuffer); err != nil {
		nf.Close()
		return fmt.Errorf("flows: nflog group %d: %w", c.cfg.LogGroup, err)
	}
	var errs uint64 // the library's receive goroutine only
	errfn := func(err error) int {
		if ctx.Err() != nil || closedErr(err) {
			return 1
		}
		if errors.Is(err, unix.ENOBUFS) {
			c.lose(LostNFLOGENOBUFS, 1)
			return 0
		}
		if errs++; errs&(errs-1) == 0 {
			c.log.Warn("nflog: receive", "group", c.cfg.LogGroup, "err", err, "errors", errs)
		}
		time.Sleep(10 * time.Millisecond)
		return 0
	}
	if err := nf.RegisterWithErrorFunc(ctx, c.onLog, errfn); err != nil {
		nf.Close()
		return fmt.Errorf("flows: nflog group %d: %w", c.cfg.LogGroup, err)
	}
	c.nfl = nf
	return nil
}

// onLog reads one NFLOG record (on the library's receive goroutine).
func (c *Collector) onLog(a gonflog.Attribute) int {
	// The group's instance was made by this socket's bind: its
	// sequence starts at 0.
	if a.Seq != nil {
		if *a.Seq != c.nfSeq {
			c.lose(LostNFLOGGap, uint64(*a.Seq-c.nfSeq)) // wraps correctly in uint32
		}
		c.nfSeq = *a.Seq + 1
	}
	var r logRec
	var ok bool
	if a.Prefix != nil {
		r.hit, ok = parseHit(*a.Prefix)
	}
	if ok && a.Payload != nil {
		r.k, r.length, ok = parsePacket(*a.Payload)
	}
	if !ok {
		c.lose(LostUnparsed, 1)
		return 0
	}
	r.at = time.Now()
	if a.Timestamp != nil && !a.Timestamp.IsZero() {
		r.at = *a.Timestamp
	}
	if c.cfg.OnLog != nil {
		c.cfg.OnLog(LogEvent{Src: r.k.src, Dst: r.k.dst, Proto: r.k.proto, Port: r.k.dport, Hit: r.hit, At: r.at})
	}
	select {
	case c.logs <- r:
	default:
		c.lose(LostBufferFull, 1)
	}
	return 0
}
