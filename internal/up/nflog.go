package up

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"time"

	gonflog "github.com/florianl/go-nflog/v2"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
)

// logReader reads the dataplane's NFLOG records in the host namespace
// and keeps the latest per (source, destination, port), so that a demo
// client can say what the kernel logged about its connection.
type logReader struct {
	nf     *gonflog.Nflog
	nsFile *os.File
	cancel context.CancelFunc

	mu   sync.Mutex
	recs map[flowKey]logRecord
}

type flowKey struct {
	src, dst netip.Addr
	port     uint16
}

type logRecord struct {
	text string
	at   time.Time
}

// maxRecords bounds the records kept; older ones are dropped first.
const maxRecords = 4096

func openLogs(netnsPath string, group uint16) (*logReader, error) {
	r := &logReader{recs: map[flowKey]logRecord{}}
	// QThresh 1: each record now, not batched for up to a second.
	cfg := &gonflog.Config{Group: group, Copymode: gonflog.CopyPacket, Bufsize: 128, QThresh: 1}
	if netnsPath != "" {
		f, err := os.Open(netnsPath)
		if err != nil {
			return nil, fmt.Errorf("up: nflog: %w", err)
		}
		r.nsFile = f
		cfg.NetNS = int(f.Fd())
	}
	nf, err := gonflog.Open(cfg)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("up: nflog group %d: %w", group, err)
	}
	r.nf = nf
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	err = nf.RegisterWithErrorFunc(ctx, r.record, func(error) int { return 0 })
	if err != nil {
		r.close()
		return nil, fmt.Errorf("up: nflog group %d: %w", group, err)
	}
	return r, nil
}

func (r *logReader) record(a gonflog.Attribute) int {
	if a.Prefix == nil || a.Payload == nil {
		return 0
	}
	kind, id, ok := nft.ParseLogPrefix(*a.Prefix)
	if !ok {
		return 0
	}
	k, ok := parseFlow(*a.Payload)
	if !ok {
		return 0
	}
	text := kind
	if id != "" {
		text += " " + id
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.recs) >= maxRecords {
		clear(r.recs)
	}
	r.recs[k] = logRecord{text: text, at: time.Now()}
	return 0
}

// parseFlow reads source, destination and TCP/UDP destination port from
// an IPv4 or IPv6 packet (IPv6 without extension headers).
func parseFlow(p []byte) (flowKey, bool) {
	if len(p) < 1 {
		return flowKey{}, false
	}
	var k flowKey
	var proto byte
	var l4 []byte
	switch p[0] >> 4 {
	case 4:
		ihl := int(p[0]&0x0f) * 4
		if len(p) < ihl || ihl < 20 {
			return k, false
		}
		k.src, k.dst = netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
		proto, l4 = p[9], p[ihl:]
	case 6:
		if len(p) < 40 {
			return k, false
		}
		k.src, k.dst = netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
		proto, l4 = p[6], p[40:]
	default:
		return k, false
	}
	if (proto == 6 || proto == 17 || proto == 132) && len(l4) >= 4 {
		k.port = binary.BigEndian.Uint16(l4[2:4])
	}
	return k, true
}

// find returns the record about a connection attempted at or after
// since, waiting briefly for it to arrive.
func (r *logReader) find(ctx context.Context, src, dst netip.Addr, port int, since time.Time) string {
	k := flowKey{src, dst, uint16(port)}
	for range 10 {
		r.mu.Lock()
		rec, ok := r.recs[k]
		r.mu.Unlock()
		if ok && !rec.at.Before(since) {
			return rec.text
		}
		select {
		case <-ctx.Done():
			return ""
		case <-time.After(20 * time.Millisecond):
		}
	}
	return ""
}

func (r *logReader) close() {
	if r.cancel != nil {
		r.cancel()
	}
	if r.nf != nil {
		r.nf.Close()
	}
	if r.nsFile != nil {
		r.nsFile.Close()
	}
}
