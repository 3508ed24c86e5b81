// Package nft is the kernel implementation of dataplane.Dataplane: one
// nftables table, "inet bulkhead", in the host's network namespace,
// programmed through netlink (github.com/google/nftables), never with the
// nft command.
//
// The ruleset mirrors compile.Lookup lookup for lookup, so that a
// connection costs a constant number of map lookups whatever the number
// of rules; docs/dataplane.md shows its shape and says why. Updates are
// the difference between the state in force and the desired one, kept in
// memory, written as one netlink transaction: the kernel switches from
// the old ruleset to the new one at once. A restarted agent adopts the
// table it finds: the first Apply writes a new generation of chains and
// maps beside the old one, points the base chains at it and deletes the
// old one, all in one transaction, so that enforcement never stops and
// established connections survive.
package nft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/internal/compile"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
)

// Options configure a Dataplane. The zero value works: the calling
// process's namespace, NFLOG group 0, queue 0.
type Options struct {
	// NetNS is the path of the network namespace to program ("": the
	// namespace of the calling process).
	NetNS  string
	Logger *slog.Logger
	// LogGroup is the NFLOG group of log records (see LogPrefix).
	LogGroup uint16
	// QueueNum is the NFQUEUE that escalated connections go to. Nothing
	// listening there: they are dropped.
	QueueNum uint16
	// EscalateMark is the packet-mark bit that carries "escalate" from a
	// side's verdict to the end of the decision (0: DefaultEscalateMark).
	EscalateMark uint32
	// LogRate limits log records per second per rule (0: DefaultLogRate).
	LogRate uint32
}

// DefaultEscalateMark is the packet-mark bit used when Options leave it 0:
// clear of kube-proxy (0x4000, 0x8000), Cilium (0x0f00) and Calico
// (0xffff0000 by default).
const DefaultEscalateMark = 0x00100000

// DefaultLogRate is the default rate limit of log records per rule.
const DefaultLogRate = 200

// Dataplane enforces compiled state in the kernel. See the package doc.
type Dataplane struct {
	opts     Options
	log      *slog.Logger
	nsFd     int // -1: the calling process's namespace
	features map[string]string
	native   bool // the nft queue statement works

	mu     sync.Mutex // guards model, closed and conn during Apply
	conn   *nftables.Conn
	model  *model
	broken bool // the last transaction failed: start a new generation
	closed bool
	last   map[string]int // element operations of the last Apply, by set (for reports)
	phases phases         // where the last Apply spent its time (for reports)

	// afterPrepare, when set (by tests), runs between the preparatory
	// and the switch transaction of an Apply.
	afterPrepare func()
}

// phases times an Apply: computing the transactions, encoding them and
// the kernel's work on each.
type phases struct{ build, encode, pre, main time.Duration }

var _ dataplane.Dataplane = (*Dataplane)(nil)

// New opens the namespace, probes the kernel's features (in a scratch
// table, removed again) and returns a Dataplane. It does not touch
// Bulkhead's table: the first Apply adopts it.
func New(opts Options) (*Dataplane, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.EscalateMark == 0 {
		opts.EscalateMark = DefaultEscalateMark
	}
	if opts.LogRate == 0 {
		opts.LogRate = DefaultLogRate
	}
	d := &Dataplane{opts: opts, log: opts.Logger.With("component", "nft"), nsFd: -1}
	if opts.NetNS != "" {
		fd, err := unix.Open(opts.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, errorf("open network namespace %s: %w", opts.NetNS, err)
		}
		d.nsFd = fd
	}
	c, err := d.dial()
	if err != nil {
		d.closeNS()
		return nil, err
	}
	d.conn = c
	if err := d.probe(); err != nil {
		d.Close()
		return nil, err
	}
	d.log.Info("kernel features", "features", d.features)
	return d, nil
}

// sendBuffer is the netlink socket's send buffer: one transaction is one
// message, and a first load of 100,000 elements is about 10 MiB.
const sendBuffer = 256 << 20

// dial opens a lasting netlink connection into the namespace with buffers
// big enough for a whole generation in one transaction.
func (d *Dataplane) dial() (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(bigBuffers)}
	if d.nsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(d.nsFd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, errorf("open netlink connection: %w", err)
	}
	return c, nil
}

// bigBuffers raises the socket buffers past the system maximum when the
// process may (CAP_NET_ADMIN), and to that maximum otherwise.
func bigBuffers(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sendBuffer) != nil {
			serr = c.SetWriteBuffer(sendBuffer)
		}
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20) != nil {
			_ = c.SetReadBuffer(16 << 20)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

func (d *Dataplane) closeNS() {
	if d.nsFd >= 0 {
		unix.Close(d.nsFd)
		d.nsFd = -1
	}
}

// Features reports what the kernel offers and the fallback chosen where a
// feature is missing.
func (d *Dataplane) Features() map[string]string {
	out := make(map[string]string, len(d.features))
	for k, v := range d.features {
		out[k] = v
	}
	return out
}

// Close releases the netlink connection and the namespace; enforcement
// stays in place.
func (d *Dataplane) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	var err error
	if d.conn != nil {
		err = d.conn.CloseLasting()
	}
	d.closeNS()
	return err
}

// Apply makes want the state in force: what the switch will refer to in a
// preparatory transaction that changes no verdict, then the switch in one
// transaction (see docs/dataplane.md). The first Apply after New, the
// first after a failed one, one whose State is not the next (or the
// previous) of the one in force (compile.SafeSwitch: a reused number could
// change its meaning under a packet on its way) and one that finds too
// much garbage in the interval map write a new generation.
func (d *Dataplane) Apply(ctx context.Context, want dataplane.Desired) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return dataplane.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return errorf("apply: %w", err)
	}
	start := time.Now()
	fresh := d.model == nil || d.broken || (d.model.state == nil) != (want.State == nil) ||
		(want.State != nil && !compile.SafeSwitch(d.model.state, want.State)) ||
		d.model.pms.needsCompaction()
	var (
		t   *tx
		m   *model
		err error
	)
	if fresh {
		t, m, err = d.newGeneration(want)
	} else {
		m = d.model
		t = newTx(table())
		m.update(t, want)
	}
	if err == nil && m.err != nil {
		// The model took in what the kernel will not get: start afresh.
		err, m.err, d.broken = errorf("apply: %w", m.err), nil, true
	}
	if err != nil {
		return err
	}
	m.sweep(t)
	ph := phases{build: time.Since(start)}
	d.log.Debug("transactions", "prepare", t.pre, "switch", t)
	for i, part := range []*tx{t.pre, t} {
		if i == 1 && d.afterPrepare != nil {
			d.afterPrepare()
		}
		if part.empty() {
			continue
		}
		t0 := time.Now()
		if err := part.send(d.conn); err != nil {
			d.broken = true
			d.redial() // drop what the connection buffered: it must never reach the kernel
			return err
		}
		t1 := time.Now()
		ph.encode += t1.Sub(t0)
		if err := d.conn.Flush(); err != nil {
			d.broken = true
			return errorf("apply %s: %w", m.b, err)
		}
		if i == 0 {
			ph.pre = time.Since(t1)
		} else {
			ph.main = time.Since(t1)
		}
	}
	if t.post != nil {
		// The state is in force; what is left of the old generation is
		// garbage. Should it stay (the deletion failed), the next Apply
		// writes a new generation, which sweeps it.
		err := t.post.send(d.conn)
		if err == nil {
			err = d.conn.Flush()
		} else {
			d.redial()
		}
		if err != nil {
			d.log.Warn("remove the previous generation; the next apply tries again", "err", err)
			d.model, d.broken = m, true
			return nil
		}
	}
	d.phases = ph
	d.last = map[string]int{}
	t.pre.perSet(d.last)
	t.perSet(d.last)
	d.model, d.broken = m, false
	d.log.Debug("applied", "generation", m.b.gen, "fresh", fresh, "elements", t.pre.elements()+t.elements(),
		"duration", time.Since(start))
	return nil
}

// redial replaces the netlink connection; the old one's buffered messages
// go with it.
func (d *Dataplane) redial() {
	_ = d.conn.CloseLasting()
	if c, err := d.dial(); err == nil {
		d.conn = c
		return
	}
	// A connection that dials per operation cannot fail to be made.
	opts := []nftables.ConnOption{nftables.WithSockOptions(bigBuffers)}
	if d.nsFd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(d.nsFd))
	}
	d.conn, _ = nftables.New(opts...)
}

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

// Cleanup removes Bulkhead's table from the namespace at netnsPath (""
// for the calling process's): every chain, map and counter Bulkhead
// made. A missing table is not an error; a table of that name that
// Bulkhead did not make is left alone and reported.
func Cleanup(netnsPath string) error {
	d, c, err := dialNS("cleanup", netnsPath)
	if err != nil {
		return err
	}
	defer d.closeNS()
	defer c.CloseLasting()
	found, err := readTable(c)
	if err != nil {
		return err
	}
	if !found.exists {
		return nil
	}
	if !found.ours {
		return errorf("cleanup: table inet %s was not made by Bulkhead (its base chains lack the %q tag); remove it yourself if it is unwanted", TableName, Tag)
	}
	c.DelTable(table())
	if err := c.Flush(); err != nil && !errors.Is(err, os.ErrNotExist) {
		return errorf("cleanup: delete table inet %s: %w", TableName, err)
	}
	return nil
}

func (d *Dataplane) String() string { return fmt.Sprintf("nft dataplane (netns %q)", d.opts.NetNS) }
