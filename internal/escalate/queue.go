package escalate

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// readBuffer is the queue socket's receive buffer: a burst of escalations
// waits there rather than being dropped (CauseUndelivered). It holds
// about 10,000 messages of copyLen bytes, more than queueSlack.
const readBuffer = 4 << 20

// queueSlack is the kernel queue's room beyond the held packets: what
// arrives while the agent is not scheduled waits there (at 6,000
// escalations a second, 0.7 s of them), a few MB of kernel memory at most.
const queueSlack = 4096

// Open binds NFQUEUE opts.QueueNum in opts.NetNS and starts holding what
// arrives there. It fails when the queue is bound already (by another
// Holder or process). Close stops it.
func Open(opts Options) (*Holder, error) {
	q := &nfq{netns: opts.NetNS, num: opts.QueueNum}
	h, err := newHolder(opts, q)
	if err != nil {
		return nil, err
	}
	qlen := opts.QueueLen
	if qlen == 0 {
		qlen = uint32(h.opts.MaxPending) + queueSlack
	}
	if err := q.open(h, qlen); err != nil {
		h.Close()
		return nil, err
	}
	h.log.Info("holding escalations", "netns", opts.NetNS, "queue_len", qlen,
		"max_pending", h.opts.MaxPending, "max_pending_per_source", h.opts.MaxPendingPerSource)
	return h, nil
}

// nfq is the kernel's queue through github.com/florianl/go-nfqueue.
type nfq struct {
	netns  string
	num    uint16
	mu     sync.Mutex
	q      *nfqueue.Nfqueue
	cancel context.CancelFunc
}

func (n *nfq) open(h *Holder, qlen uint32) error {
	where := fmt.Sprintf("queue %d in %s", n.num, nsName(n.netns))
	cfg := &nfqueue.Config{NfQueue: n.num, MaxPacketLen: copyLen, MaxQueueLen: qlen,
		Copymode: nfqueue.NfQnlCopyPacket, AfFamily: unix.AF_INET}
	if n.netns != "" {
		fd, err := unix.Open(n.netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("escalate: open %s: %w", where, err)
		}
		defer unix.Close(fd)
		cfg.NetNS = fd
	}
	q, err := nfqueue.Open(cfg)
	if err != nil {
		return fmt.Errorf("escalate: open %s: %w", where, err)
	}
	if err := q.Con.SetReadBuffer(readBuffer); err != nil {
		q.Close()
		return fmt.Errorf("escalate: open %s: set the receive buffer: %w", where, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	admitted := 0
	hook := func(a nfqueue.Attribute) int {
		if a.PacketID == nil {
			return 0
		}
		var payload []byte
		if a.Payload != nil {
			payload = *a.Payload
		}
		h.admit(*a.PacketID, payload)
		// After a backlog, let the questions just admitted run before
		// admitting more: otherwise intake outruns service and one busy
		// source meets its bound for nothing.
		if admitted++; admitted%32 == 0 {
			runtime.Gosched()
		}
		return 0
	}
	onError := func(err error) int {
		if ctx.Err() != nil {
			return 1
		}
		var op *netlink.OpError
		if errors.Is(err, unix.ENOBUFS) || (errors.As(err, &op) && (op.Timeout() || errors.Is(op.Err, unix.ENOBUFS))) {
			return 0 // the kernel counts what it could not deliver (CauseUndelivered)
		}
		// The socket is broken: stop, so that the kernel drops what is
		// queued and everything after (fail closed), rather than hold
		// packets nobody reads.
		h.log.Error("reading the queue failed: stopping", "err", err)
		go h.Close()
		return 1
	}
	if err := q.RegisterWithErrorFunc(ctx, hook, onError); err != nil {
		cancel()
		q.Close()
		return fmt.Errorf("escalate: bind %s: %w", where, err)
	}
	n.mu.Lock()
	n.q, n.cancel = q, cancel
	n.mu.Unlock()
	return nil
}

func nsName(path string) string {
	if path == "" {
		return "this process's network namespace"
	}
	return path
}

func (n *nfq) verdict(id uint32, v Verdict) error {
	n.mu.Lock()
	q := n.q
	n.mu.Unlock()
	if q == nil {
		return errors.New("queue not open")
	}
	kv := nfqueue.NfDrop
	if v == Allow {
		kv = nfqueue.NfAccept
	}
	return q.SetVerdict(id, kv)
}

func (n *nfq) close() error {
	n.mu.Lock()
	q, cancel := n.q, n.cancel
	n.q = nil
	n.mu.Unlock()
	if q == nil {
		return nil
	}
	cancel()
	return q.Close()
}

// kernelDrops reads the queue's line of /proc/net/netfilter/nfnetlink_queue
// in the queue's namespace: queue_dropped (the queue was full) and
// user_dropped (the socket could not take the message). Both count from
// the moment the queue was bound.
func (n *nfq) kernelDrops() (full, undelivered uint64, err error) {
	var data []byte
	read := func() error {
		var rerr error
		data, rerr = os.ReadFile("/proc/thread-self/net/netfilter/nfnetlink_queue")
		return rerr
	}
	if n.netns == "" {
		err = read()
	} else {
		err = netns.DoPath(n.netns, read)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("escalate: read the kernel's counts of queue %d: %w", n.num, err)
	}
	return parseQueueStats(data, n.num)
}

// parseQueueStats finds queue num's line: queue number, peer port id,
// queue total, copy mode, copy range, queue dropped, user dropped, id
// sequence, 1. A queue not bound has no line: nothing dropped.
func parseQueueStats(data []byte, num uint16) (full, undelivered uint64, err error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 7 || f[0] != strconv.Itoa(int(num)) {
			continue
		}
		full, err1 := strconv.ParseUint(f[5], 10, 64)
		undelivered, err2 := strconv.ParseUint(f[6], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return 0, 0, fmt.Errorf("escalate: the kernel's counts of queue %d: %q: %w", num, sc.Text(), err)
		}
		return full, undelivered, nil
	}
	return 0, 0, nil
}
