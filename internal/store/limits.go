package store

import (
	"context"
	"fmt"
)

// Limits bound what one request may carry. The zero value means the
// defaults, which fit an etcd with its own defaults (--max-txn-ops 128,
// --max-request-bytes 1.5 MiB), so that both stores accept the same
// requests. A larger limit needs the etcd flags raised to match.
type Limits struct {
	MaxKeyBytes   int // a key or prefix; default 1 KiB
	MaxValueBytes int // one value; default 1 MiB
	MaxTxnOps     int // ops in one Txn, and conditions in one Txn; default 128
	MaxTxnBytes   int // keys and values of one Txn's ops and conditions together; default 1.25 MiB
}

// Default limits.
const (
	DefaultMaxKeyBytes   = 1 << 10
	DefaultMaxValueBytes = 1 << 20
	DefaultMaxTxnOps     = 128
	DefaultMaxTxnBytes   = 5 << 18 // 1.25 MiB
)

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	if l.MaxKeyBytes <= 0 {
		l.MaxKeyBytes = DefaultMaxKeyBytes
	}
	if l.MaxValueBytes <= 0 {
		l.MaxValueBytes = DefaultMaxValueBytes
	}
	if l.MaxTxnOps <= 0 {
		l.MaxTxnOps = DefaultMaxTxnOps
	}
	if l.MaxTxnBytes <= 0 {
		l.MaxTxnBytes = DefaultMaxTxnBytes
	}
	return l
}

// CheckKey checks a key for Get (op names the operation in the error).
func (l Limits) CheckKey(op, key string) error {
	if key == "" {
		return fmt.Errorf("store: %s: empty key: %w", op, ErrInvalid)
	}
	if len(key) > l.MaxKeyBytes {
		return fmt.Errorf("store: %s %.40q…: key is %d bytes, the limit is %d: %w", op, key, len(key), l.MaxKeyBytes, ErrTooLarge)
	}
	return nil
}

// CheckPrefix checks a List or Watch prefix, which may be empty.
func (l Limits) CheckPrefix(op, prefix string) error {
	if len(prefix) > l.MaxKeyBytes {
		return fmt.Errorf("store: %s %.40q…: prefix is %d bytes, the limit is %d: %w", op, prefix, len(prefix), l.MaxKeyBytes, ErrTooLarge)
	}
	return nil
}

// CheckTxn checks a Txn's conditions and ops against the limits, and that
// no key appears twice among the ops.
func (l Limits) CheckTxn(conds []Cond, ops []Op) error {
	if len(conds) > l.MaxTxnOps {
		return fmt.Errorf("store: txn: %d conditions, the limit is %d: %w", len(conds), l.MaxTxnOps, ErrTooLarge)
	}
	if len(ops) > l.MaxTxnOps {
		return fmt.Errorf("store: txn: %d ops, the limit is %d (split the change, or stage it under keys of its own and switch to it in one small txn): %w",
			len(ops), l.MaxTxnOps, ErrTooLarge)
	}
	total := 0
	for i, c := range conds {
		if err := l.CheckKey(fmt.Sprintf("txn: condition %d", i), c.Key); err != nil {
			return err
		}
		if c.ModRev < 0 {
			return fmt.Errorf("store: txn: condition %d on %q: ModRev %d, want 0 (absent) or a revision: %w", i, c.Key, c.ModRev, ErrInvalid)
		}
		total += len(c.Key)
	}
	seen := make(map[string]int, len(ops))
	for i, op := range ops {
		if err := l.CheckKey(fmt.Sprintf("txn: op %d", i), op.Key); err != nil {
			return err
		}
		if j, dup := seen[op.Key]; dup {
			return fmt.Errorf("store: txn: ops %d and %d both change %q; a key may appear once: %w", j, i, op.Key, ErrInvalid)
		}
		seen[op.Key] = i
		if op.Delete && op.Value != nil {
			return fmt.Errorf("store: txn: op %d deletes %q but carries a value: %w", i, op.Key, ErrInvalid)
		}
		if len(op.Value) > l.MaxValueBytes {
			return fmt.Errorf("store: txn: op %d on %q: value is %d bytes, the limit is %d: %w", i, op.Key, len(op.Value), l.MaxValueBytes, ErrTooLarge)
		}
		total += len(op.Key) + len(op.Value)
	}
	if total > l.MaxTxnBytes {
		return fmt.Errorf("store: txn: keys and values come to %d bytes, the limit is %d: %w", total, l.MaxTxnBytes, ErrTooLarge)
	}
	return nil
}

// WatchStart checks a Watch's prefix and starting revision against l and
// resolves fromRev 0 ("from now on") to the revision after rev's answer.
// Both implementations start their Watch with it.
func (l Limits) WatchStart(ctx context.Context, prefix string, fromRev int64,
	rev func(context.Context) (int64, error)) (int64, error) {
	if err := l.CheckPrefix("watch", prefix); err != nil {
		return 0, err
	}
	if fromRev < 0 {
		return 0, fmt.Errorf("store: watch %q: from revision %d, want 0 (now) or a revision: %w", prefix, fromRev, ErrInvalid)
	}
	if fromRev != 0 {
		return fromRev, nil
	}
	now, err := rev(ctx)
	if err != nil {
		return 0, err
	}
	return now + 1, nil
}
