package audit

import "fmt"

// BrokenError says where the chain breaks: the first entry that is not as
// it was written, and how.
type BrokenError struct {
	Seq    uint64 // the first entry found broken or missing
	Reason string
}

func (e *BrokenError) Error() string { return fmt.Sprintf("audit: entry %d: %s", e.Seq, e.Reason) }

// Verify checks that entries, as read from the log, are the whole chain
// from entry 1 as it was written: every entry's hash matches its content,
// every entry names its predecessor's hash, seqs run 1, 2, 3… and
// revisions increase. With an anchor, a head recorded earlier, it also
// checks that the log reaches the anchor and passes through it, which
// finds a log cut short or rewritten from some point on. It returns a
// *BrokenError for the first entry that fails.
func Verify(entries []Entry, anchor *Head) error {
	var prev *Entry
	for i := range entries {
		e := &entries[i]
		want := uint64(i) + 1
		if e.Seq != want {
			return misplaced(entries, i, want)
		}
		if Sum(*e) != e.Hash {
			return &BrokenError{e.Seq, "its content does not match its hash: a field was changed after it was written"}
		}
		if prev == nil && e.PrevHash != "" {
			return &BrokenError{e.Seq, "it is the first entry but names a previous one: the log before it is gone"}
		}
		if prev != nil && e.PrevHash != prev.Hash {
			return &BrokenError{prev.Seq, fmt.Sprintf("entry %d does not chain to it: it was changed or replaced, hash and all, after entry %d was written", e.Seq, e.Seq)}
		}
		if prev != nil && e.Revision != 0 && prev.Revision != 0 && e.Revision <= prev.Revision {
			return &BrokenError{prev.Seq, fmt.Sprintf("it was written at revision %d, not before entry %d's %d: it was rewritten later", prev.Revision, e.Seq, e.Revision)}
		}
		prev = e
	}
	if anchor == nil || anchor.Seq == 0 {
		return nil
	}
	if uint64(len(entries)) < anchor.Seq {
		return &BrokenError{uint64(len(entries)) + 1, fmt.Sprintf("missing: the log ends at entry %d, but the anchor %s says it reached entry %d: it was cut short", len(entries), anchor, anchor.Seq)}
	}
	if got := entries[anchor.Seq-1].Hash; got != anchor.Hash {
		return &BrokenError{anchor.Seq, fmt.Sprintf("its hash %s is not the anchor's %s: the log was rewritten up to here", got, anchor.Hash)}
	}
	return nil
}

// misplaced explains entry i, whose seq is not the want expected there.
func misplaced(entries []Entry, i int, want uint64) error {
	got := entries[i].Seq
	if got < want {
		return &BrokenError{got, fmt.Sprintf("it appears again after entry %d: duplicated or reordered", want-1)}
	}
	for _, later := range entries[i+1:] {
		if later.Seq == want {
			return &BrokenError{want, fmt.Sprintf("entry %d stands in its place and it comes later: reordered", got)}
		}
	}
	if want == 1 {
		return &BrokenError{want, fmt.Sprintf("missing: the log starts at entry %d", got)}
	}
	return &BrokenError{want, fmt.Sprintf("missing: entry %d is followed by entry %d", want-1, got)}
}
