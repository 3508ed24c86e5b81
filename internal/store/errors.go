package store

import (
	"errors"
	"fmt"
)

// Errors returned by every Store, wrapped with the operation and the object
// (`store: get "policies/a": not found`); test them with errors.Is.
var (
	ErrNotFound    = errors.New("not found")
	ErrInvalid     = errors.New("invalid request")
	ErrTooLarge    = errors.New("over a limit")
	ErrCompacted   = errors.New("revision compacted")
	ErrFutureRev   = errors.New("future revision")
	ErrSlowWatcher = errors.New("watcher too slow")
	ErrClosed      = errors.New("store closed")
	// ErrUnavailable: the store cannot answer now (etcd has no leader,
	// no member answers, or the call's time bound ran out). Retrying
	// later may work; callers answer 503.
	ErrUnavailable = errors.New("store unavailable")
)

// CompactedError is the failure of a Watch from a revision whose history
// has been dropped. The caller resynchronizes: List, then Watch from the
// list's revision + 1.
type CompactedError struct {
	Prefix string
	From   int64 // the revision asked for
	Oldest int64 // the oldest revision a watch may start from now
}

func (e *CompactedError) Error() string {
	return fmt.Sprintf("store: watch %q from revision %d: %v; the oldest revision kept is %d (list, then watch from the list's revision + 1)",
		e.Prefix, e.From, ErrCompacted, e.Oldest)
}

// Is reports ErrCompacted as a match, for errors.Is.
func (e *CompactedError) Is(target error) bool { return target == ErrCompacted }
