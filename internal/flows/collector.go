package flows

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	gonflog "github.com/florianl/go-nflog/v2"
	"github.com/mdlayher/netlink"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
)

// Config configures a Collector. StateDir and Sink are required; the
// zero value of everything else works.
type Config struct {
	// NetNS is the path of the network namespace whose conntrack and
	// NFLOG to read: the dataplane's host namespace ("": the calling
	// process's).
	NetNS string
	// LogGroup is the dataplane's NFLOG group (nft.Options.LogGroup).
	LogGroup uint16
	// StateDir holds the spool and the stream's id and sequence numbers.
	StateDir string
	Sink     Sink
	// Resolver names the workloads and the allowing rule (nil: addresses only).
	Resolver Resolver
	// Counters, when set, lets the collector report what the kernel's
	// log rate limit suppressed (Batch.Suppressed).
	Counters CounterSource
	Host     string
	Logger   *slog.Logger
	// FlushInterval is the longest a record waits before its batch is
	// sealed (0: one second); MaxBatch seals a batch early (0: 4096).
	FlushInterval time.Duration
	MaxBatch      int
	// SpoolBytes bounds the spool on disk (0: 256 MiB).
	SpoolBytes int64
	// ReadBuffer is the kernel receive buffer of each socket (0: 32 MiB).
	ReadBuffer int
	// CounterInterval is how often the dataplane's counters are read for
	// Batch.Suppressed (0: 10 s), on a goroutine of their own: a reading
	// of every rule counter takes seconds at 100,000 rules.
	CounterInterval time.Duration
	// SkipUpdates leaves conntrack's UPDATE events unread (the kernel
	// then does not make them): a record's End is then when conntrack
	// removed the entry, not when TCP began to close. They are most of
	// the events (about 3.4 of 5.4 per short TCP connection) and of the
	// collection's cost (docs/benchmarks.md, "Flow collection").
	SkipUpdates bool
	// OnLog, when set, is told of every dataplane log record as it is
	// read, before it becomes part of a flow record (a screen that shows
	// connections as they happen: `bulkhead up --demo`). It runs on the
	// NFLOG reader's goroutine and must not block.
	OnLog func(LogEvent)
}

// LogEvent is one dataplane log record: the packet's addresses, protocol
// and destination port (ICMP: type<<8|code), and what the rule said.
type LogEvent struct {
	Src, Dst netip.Addr
	Proto    uint8
	Port     uint16
	Hit      Hit
	At       time.Time
}

// Stats are a Collector's counts since it started.
type Stats struct {
	New, Update, Destroy, Logs uint64 // kernel events read
	Records                    uint64 // records made
	Delivered                  uint64 // records in batches the Sink took
	Batches                    uint64 // batches the Sink took
	Lost                       map[Cause]uint64
	SpoolFiles                 int
	SpoolBytes                 int64
}

// Collector reads conntrack events and NFLOG records in one network
// namespace and delivers them as batches of Records to a Sink. See the
// package doc. Stats and Close may be called from any goroutine.
type Collector struct {
	cfg   Config
	log   *slog.Logger
	spool *spool

	ct        *netlink.Conn
	nfl       *gonflog.Nflog
	cancel    context.CancelFunc
	stop      chan struct{} // closed by Close: the assembler seals and ends
	closeOnce sync.Once
	reader    sync.WaitGroup // the conntrack and counter readers
	wg        sync.WaitGroup // the assembler and the deliverer

	events   chan ctEvent
	logs     chan logRec
	readings chan dataplane.Counters
	batches  chan *Batch

	nfSeq uint32 // next NFLOG sequence number expected (nflog goroutine only)

	// kernel-side losses, taken into the next batch
	lostKernel [numCauses]atomic.Uint64

	base dataplane.Counters // the kernel's counters when collection started

	count struct{ new, update, destroy, logs, records atomic.Uint64 } // per event: no lock

	mu    sync.Mutex // guards stats and carry
	stats Stats      // the counts not in count
	carry Batch      // counts of batches that could not even be spooled
}

// causes in a fixed order, for the atomic counters.
var causes = [...]Cause{LostConntrackENOBUFS, LostNFLOGENOBUFS, LostNFLOGGap, LostBufferFull,
	LostSpoolFull, LostSpoolError, LostUnparsed}

const numCauses = len(causes)

func causeIndex(c Cause) int {
	for i, x := range causes {
		if x == c {
			return i
		}
	}
	panic("flows: unknown cause " + string(c))
}

func (c *Collector) lose(cause Cause, n uint64) { c.lostKernel[causeIndex(cause)].Add(n) }

// New enables conntrack's counters and timestamps in the namespace,
// opens its conntrack event and NFLOG sockets and the spool, and starts
// collecting. Close stops it.
func New(cfg Config) (*Collector, error) {
	if cfg.StateDir == "" || cfg.Sink == nil {
		return nil, errors.New("flows: new collector: StateDir and Sink are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = time.Second
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 4096
	}
	if cfg.SpoolBytes <= 0 {
		cfg.SpoolBytes = 256 << 20
	}
	if cfg.ReadBuffer <= 0 {
		cfg.ReadBuffer = 32 << 20
	}
	if cfg.CounterInterval <= 0 {
		cfg.CounterInterval = 10 * time.Second
	}
	c := &Collector{cfg: cfg, log: cfg.Logger.With("component", "flows"),
		stop:     make(chan struct{}),
		events:   make(chan ctEvent, 16384),
		logs:     make(chan logRec, 16384),
		readings: make(chan dataplane.Counters, 1),
		batches:  make(chan *Batch, 8),
		stats:    Stats{Lost: map[Cause]uint64{}}}
	sp, err := openSpool(cfg.StateDir, cfg.SpoolBytes)
	if err != nil {
		return nil, err
	}
	c.spool = sp
	if n, b := sp.usage(); n > 0 {
		c.log.Info("spool kept from before", "batches", n, "bytes", b, "dir", cfg.StateDir)
	}
	if err := c.enableAccounting(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	if err := c.openConntrack(); err != nil {
		cancel()
		return nil, err
	}
	if err := c.openNFLOG(ctx); err != nil {
		cancel()
		c.ct.Close()
		return nil, err
	}
	c.snapshotCounters(ctx) // after the sockets: no record is counted before its counter
	c.reader.Add(1)
	go c.readConntrack()
	if cfg.Counters != nil {
		c.reader.Add(1)
		go c.readCounters(ctx)
	}
	c.wg.Add(2)
	go c.assemble()
	go c.deliver()
	return c, nil
}

// enableAccounting turns on conntrack's per-connection counters and
// timestamps in the namespace: without them DESTROY events carry neither
// packets and bytes nor start and stop times.
func (c *Collector) enableAccounting() error {
	set := func() error {
		for _, k := range []string{"net/netfilter/nf_conntrack_acct", "net/netfilter/nf_conntrack_timestamp"} {
			if err := netns.Sysctl(k, "1"); err != nil {
				return fmt.Errorf("flows: enable conntrack accounting: %w", err)
			}
		}
		return nil
	}
	var err error
	if c.cfg.NetNS == "" {
		err = set()
	} else {
		err = netns.DoPath(c.cfg.NetNS, set)
	}
	if err != nil {
		return err
	}
	ns := c.cfg.NetNS
	if ns == "" {
		ns = "the agent's own"
	}
	c.log.Info("enabled net.netfilter.nf_conntrack_acct=1 and nf_conntrack_timestamp=1 (packets, bytes and times of connections)", "netns", ns)
	return nil
}

// Close stops reading, seals and hands over (or spools) what was read,
// and returns once everything is delivered or on disk.
func (c *Collector) Close() error {
	c.closeOnce.Do(c.close)
	return nil
}

func (c *Collector) close() {
	c.cancel() // stops the NFLOG reader; Close waits for it
	c.nfl.Close()
	c.ct.Close()
	c.reader.Wait() // the assembler still takes events meanwhile
	close(c.stop)
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := sumCounts(c.carry.Lost); n > 0 {
		c.log.Warn("closed with counts of loss that could not be written to the spool", "lost", c.carry.Lost)
	}
}

// Stats returns the counts since New.
func (c *Collector) Stats() Stats {
	c.mu.Lock()
	s := c.stats
	s.Lost = maps.Clone(c.stats.Lost)
	c.mu.Unlock()
	s.New, s.Update, s.Destroy = c.count.new.Load(), c.count.update.Load(), c.count.destroy.Load()
	s.Logs, s.Records = c.count.logs.Load(), c.count.records.Load()
	for i, cause := range causes { // kernel-side losses not yet in a batch
		if n := c.lostKernel[i].Load(); n > 0 {
			s.Lost[cause] += n
		}
	}
	s.SpoolFiles, s.SpoolBytes = c.spool.usage()
	return s
}

func sumCounts(m map[Cause]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

// Stream is the id of the collector's stream of batches (kept in
// StateDir, so it survives a restart).
func (c *Collector) Stream() string { return c.spool.stream }
