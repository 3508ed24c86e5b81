package revisions

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/seal"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Blobs caches the content of blobs, which never change, and remembers
// which are known to be in the store. Every blob read from the store is
// checked against its name, the SHA-256 of its content: one changed in
// the store is never served, and onMismatch raises the alert.
type Blobs struct {
	Store store.Store
	// OnMismatch, if set, is told of a blob whose content hashes to got.
	OnMismatch func(key, got string)

	mu sync.Mutex
	m  map[string][]byte
	n  int
}

const blobCacheBytes = 256 << 20

func (b *Blobs) Get(ctx context.Context, hash string) ([]byte, error) {
	b.mu.Lock()
	v, ok := b.m[hash]
	b.mu.Unlock()
	if ok {
		return v, nil
	}
	kv, err := b.Store.Get(ctx, BlobPrefix+hash)
	if err != nil {
		return nil, fmt.Errorf("manager: read blob %s: %w", hash, err)
	}
	if sum := sha256.Sum256(kv.Value); hex.EncodeToString(sum[:]) != hash {
		got := hex.EncodeToString(sum[:])
		if b.OnMismatch != nil {
			b.OnMismatch(kv.Key, got)
		}
		return nil, fmt.Errorf("manager: read blob %s: %w", hash, &seal.TamperedError{Key: kv.Key,
			Reason: "its content hashes to " + got + ", not to its name: it was changed outside the manager, and the manager will not serve it"})
	}
	b.remember(hash, kv.Value)
	return kv.Value, nil
}

func (b *Blobs) has(hash string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.m[hash]
	return ok
}

func (b *Blobs) remember(hash string, v []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil || b.n+len(v) > blobCacheBytes {
		b.m, b.n = map[string][]byte{}, 0
	}
	if _, ok := b.m[hash]; !ok {
		b.m[hash] = v
		b.n += len(v)
	}
}

// Stage writes the blobs the store may lack, in Txns of bounded size.
func (b *Blobs) Stage(ctx context.Context, items map[string][]byte) error {
	var ops []store.Op
	size := 0
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		if _, _, err := b.Store.Txn(ctx, nil, ops); err != nil {
			if errors.Is(err, store.ErrTooLarge) {
				return fault.New(fault.TooLarge, nil, "an object is too large for the store: %w", err)
			}
			return fmt.Errorf("manager: write objects: %w", err)
		}
		for _, op := range ops {
			b.remember(op.Key[len(BlobPrefix):], op.Value)
		}
		ops, size = ops[:0], 0
		return nil
	}
	hashes := make([]string, 0, len(items))
	for h := range items {
		hashes = append(hashes, h)
	}
	sort.Strings(hashes)
	for _, h := range hashes {
		if b.has(h) {
			continue
		}
		v := items[h]
		if len(ops) >= StageOps || size+len(v) > stageBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		ops = append(ops, store.Put(BlobPrefix+h, v))
		size += len(v) + len(h)
	}
	return flush()
}
