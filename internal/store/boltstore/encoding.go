package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// The file holds three buckets:
//
//	meta     "rev" → current revision, "compacted" → last compacted revision,
//	         "format" → formatVersion (all 8-byte big-endian)
//	keys     key → createRev (8) | modRev (8) | value
//	history  revision (8-byte big-endian, so that it sorts) → the events of
//	         that revision: per event, type (1) | uvarint key length | key,
//	         and for a put createRev (8) | uvarint value length | value
var (
	bucketMeta    = []byte("meta")
	bucketKeys    = []byte("keys")
	bucketHistory = []byte("history")

	metaRev       = []byte("rev")
	metaCompacted = []byte("compacted")
	metaFormat    = []byte("format")
)

const formatVersion = 1

var errCorrupt = errors.New("corrupt record")

func revKey(rev int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(rev)) }

func decodeRev(b []byte) int64 {
	if len(b) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b))
}

func encodeRecord(createRev, modRev int64, value []byte) []byte {
	b := make([]byte, 16, 16+len(value))
	binary.BigEndian.PutUint64(b, uint64(createRev))
	binary.BigEndian.PutUint64(b[8:], uint64(modRev))
	return append(b, value...)
}

// decodeRecord decodes a keys record into a KV whose value is a copy, so
// that it outlives the bolt transaction.
func decodeRecord(key string, b []byte) (store.KV, error) {
	if len(b) < 16 {
		return store.KV{}, fmt.Errorf("store: key %q: %w", key, errCorrupt)
	}
	return store.KV{
		Key:       key,
		Value:     append([]byte{}, b[16:]...),
		CreateRev: int64(binary.BigEndian.Uint64(b)),
		ModRev:    int64(binary.BigEndian.Uint64(b[8:])),
	}, nil
}

func encodeEvents(evs []store.Event) []byte {
	var b []byte
	for _, ev := range evs {
		b = append(b, byte(ev.Type))
		b = binary.AppendUvarint(b, uint64(len(ev.KV.Key)))
		b = append(b, ev.KV.Key...)
		if ev.Type == store.EventPut {
			b = binary.BigEndian.AppendUint64(b, uint64(ev.KV.CreateRev))
			b = binary.AppendUvarint(b, uint64(len(ev.KV.Value)))
			b = append(b, ev.KV.Value...)
		}
	}
	return b
}

// decodeEvents appends to evs the events of revision rev under prefix,
// copying what it keeps out of b.
func decodeEvents(evs []store.Event, rev int64, b []byte, prefix string) ([]store.Event, error) {
	bad := fmt.Errorf("store: history of revision %d: %w", rev, errCorrupt)
	field := func() ([]byte, bool) {
		n, w := binary.Uvarint(b)
		if w <= 0 || uint64(len(b)-w) < n {
			return nil, false
		}
		f := b[w : w+int(n)]
		b = b[w+int(n):]
		return f, true
	}
	for len(b) > 0 {
		typ := store.EventType(b[0])
		b = b[1:]
		key, ok := field()
		if !ok {
			return nil, bad
		}
		ev := store.Event{Type: typ, KV: store.KV{ModRev: rev}}
		switch typ {
		case store.EventPut:
			if len(b) < 8 {
				return nil, bad
			}
			ev.KV.CreateRev = int64(binary.BigEndian.Uint64(b))
			b = b[8:]
			if ev.KV.Value, ok = field(); !ok {
				return nil, bad
			}
		case store.EventDelete:
		default:
			return nil, bad
		}
		if len(key) < len(prefix) || string(key[:len(prefix)]) != prefix {
			continue
		}
		ev.KV.Key = string(key)
		if ev.KV.Value != nil {
			ev.KV.Value = append([]byte{}, ev.KV.Value...)
		}
		evs = append(evs, ev)
	}
	return evs, nil
}
