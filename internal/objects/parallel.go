package objects

import (
	"bytes"
	"runtime"
	"sync"

	"github.com/bulkhead-dev/bulkhead/internal/source"
	"go.yaml.in/yaml/v3"
)

// parallelMin is the size from which Read parses a stream on every core:
// below it, the goroutines cost more than they save.
const parallelMin = 256 << 10

// A part is a run of whole documents of a stream, read on its own.
type part struct {
	start, end int // byte offsets in the stream
	lines      int // line breaks before start
	failed     bool
	splitErrs  source.Errors
	decoded    []decoded
}

// decoded is one object mapping as Decode read it.
type decoded struct {
	o    *Object
	errs source.Errors
}

// readParallel reads a stream cut into parts at its document markers, one
// part per worker at a time, and gives what Read would: ok is false when
// the stream cannot be cut safely or a part does not parse, and then the
// caller reads the whole stream in order, so that every syntax error is
// reported as the sequential reader reports it.
//
// A line that starts with "---" and a blank always starts a document for
// the YAML scanner (in a block scalar, a quoted string or a flow
// collection alike), so a part ends where the stream's document ends.
// What the parser carries from one document to the next is its anchors
// (an alias may name an anchor of an earlier document), its tag
// directives and the stream's encoding: an alias to another part's
// anchor fails to parse in its part and sends the stream to the
// sequential reader; a stream with a directive line ("%"), a carriage
// return, a NUL (UTF-16 text) or one of the Unicode line breaks that
// would make line numbers differ is not cut at all.
func readParallel(file string, data []byte) ([]*Object, source.Errors, bool) {
	return readParallelWith(file, data, runtime.GOMAXPROCS(0), parallelMin)
}

func readParallelWith(file string, data []byte, workers, minSize int) ([]*Object, source.Errors, bool) {
	parts := cutParts(data, workers, minSize)
	if len(parts) < 2 {
		return nil, nil, false
	}
	work := make(chan *part)
	var wg sync.WaitGroup
	for range min(workers, len(parts)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				p.read(file, data)
			}
		}()
	}
	for _, p := range parts {
		work <- p
	}
	close(work)
	wg.Wait()
	var splitErrs source.Errors
	results := make([][]decoded, len(parts))
	for i, p := range parts {
		if p.failed {
			return nil, nil, false
		}
		splitErrs = append(splitErrs, p.splitErrs...)
		results[i] = p.decoded
	}
	if len(splitErrs) > 0 {
		return nil, splitErrs, true
	}
	objs, errs := merge(results)
	return objs, errs, true
}

func (p *part) read(file string, data []byte) {
	// A panic in a worker would end the process; in the caller's
	// goroutine, where the sequential reader meets it again, it is what
	// it always was (net/http, for one, recovers it).
	defer func() {
		if recover() != nil {
			p.failed = true
		}
	}()
	docs, errs := documents(file, data[p.start:p.end])
	if len(errs) > 0 {
		p.failed = true
		return
	}
	for _, d := range docs {
		shiftLines(d, p.lines)
	}
	nodes, errs := expandLists(file, docs)
	if len(errs) > 0 {
		p.splitErrs = errs
		return
	}
	p.decoded = decodeAll(file, nodes)
}

// shiftLines moves a tree parsed from a part to the lines of the stream.
func shiftLines(n *yaml.Node, by int) {
	if by == 0 {
		return
	}
	n.Line += by
	for _, c := range n.Content {
		shiftLines(c, by)
	}
}

// cutParts cuts data at document markers into about four parts per
// worker of similar size; it gives none when data is small, or not safe
// to cut (see readParallel).
func cutParts(data []byte, workers, minSize int) []*part {
	if len(data) == 0 || len(data) < minSize || len(data) > MaxDocumentSize || workers < 2 || !cuttable(data) {
		return nil
	}
	target := max(len(data)/(4*workers), 1)
	var parts []*part
	cur := &part{}
	for off := 0; ; {
		i := bytes.Index(data[off:], []byte("\n---"))
		if i < 0 {
			break
		}
		at := off + i + 1 // the marker's line
		off = at
		if !markerAt(data, at) || at-cur.start < target {
			continue
		}
		cur.end = at
		parts = append(parts, cur)
		cur = &part{start: at, lines: cur.lines + bytes.Count(data[cur.start:at], []byte{'\n'})}
	}
	if len(parts) == 0 {
		return nil
	}
	cur.end = len(data)
	return append(parts, cur)
}

// markerAt reports whether the line at i is a document marker: "---"
// followed by a blank or the end.
func markerAt(data []byte, i int) bool {
	if !bytes.HasPrefix(data[i:], []byte("---")) {
		return false
	}
	if i+3 == len(data) {
		return true
	}
	c := data[i+3]
	return c == ' ' || c == '\t' || c == '\n'
}

// cuttable reports whether every line break of data is '\n' and no line
// is a directive, so that parts parse as the stream's documents do.
func cuttable(data []byte) bool {
	if bytes.Contains(data, []byte("\n%")) || bytes.IndexByte(data, '\r') >= 0 || bytes.IndexByte(data, 0) >= 0 {
		return false
	}
	// NEL (U+0085), LS (U+2028) and PS (U+2029) are line breaks to the
	// YAML scanner.
	return !bytes.Contains(data, []byte("\u0085")) && !bytes.Contains(data, []byte("\u2028")) && !bytes.Contains(data, []byte("\u2029"))
}
