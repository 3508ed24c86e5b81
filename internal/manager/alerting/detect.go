// Package alerting finds what is suspicious in the flows as they arrive:
// a workload that scans (many distinct denied destinations in a window),
// an edge between namespaces never seen before, traffic at an hour the
// workload never used, and a sudden rise in a workload's denials against
// its own baseline. A Detector is fed one record at a time (Observe) and
// keeps bounded state: at most Config.MaxWorkloads workloads and
// Config.MaxEdges edges; what it must drop is counted (Dropped).
//
// The manager feeds it every batch its flow store took (flowalerts.go)
// with the default thresholds; the thresholds as a policy object are not
// built yet (docs/flows.md, "Alerts from the flows").
package alerting

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/flows"
)

// The kinds of alert a Detector raises.
const (
	Scan      = "scan"      // many distinct denied destinations in one window
	NewEdge   = "new-edge"  // a namespace-to-namespace edge never seen before
	NewHour   = "new-hour"  // traffic at an hour of the day the workload never used
	DenyRise  = "deny-rise" // a window's denials far above the workload's baseline
	examples  = 5           // examples kept per alert
	riseAlpha = 0.2         // weight of the latest window in the baseline
)

// Config holds the thresholds; a zero field takes its default (Defaults).
type Config struct {
	Window       time.Duration // the window scans and rises are counted in (1m)
	ScanDistinct int           // distinct denied (address, port) in a window that make a scan (20)
	LearnFor     time.Duration // the learning period: of the Detector for edges, of each workload for hours (1h)
	RiseFactor   float64       // denials above this many times the baseline are a rise (10)
	RiseMin      int           // and at least this many in the window (50)
	MaxWorkloads int           // workloads tracked (10,000)
	MaxEdges     int           // edges remembered (100,000)
}

// Defaults is what a zero Config means.
var Defaults = Config{Window: time.Minute, ScanDistinct: 20, LearnFor: time.Hour, RiseFactor: 10, RiseMin: 50,
	MaxWorkloads: 10000, MaxEdges: 100000}

func (c Config) withDefaults() Config {
	d := Defaults
	if c.Window > 0 {
		d.Window = c.Window
	}
	if c.ScanDistinct > 0 {
		d.ScanDistinct = c.ScanDistinct
	}
	if c.LearnFor > 0 {
		d.LearnFor = c.LearnFor
	}
	if c.RiseFactor > 0 {
		d.RiseFactor = c.RiseFactor
	}
	if c.RiseMin > 0 {
		d.RiseMin = c.RiseMin
	}
	if c.MaxWorkloads > 0 {
		d.MaxWorkloads = c.MaxWorkloads
	}
	if c.MaxEdges > 0 {
		d.MaxEdges = c.MaxEdges
	}
	return d
}

// Alert is one finding with its evidence.
type Alert struct {
	ID       string        `json:"id"` // stable: the same finding has the same id
	Kind     string        `json:"kind"`
	Workload string        `json:"workload,omitempty"` // namespace/name of the source
	Time     time.Time     `json:"time"`               // the flow that raised it
	Window   time.Duration `json:"window,omitempty"`   // what Count was counted over
	Count    int           `json:"count"`
	Baseline float64       `json:"baseline,omitempty"` // deny-rise: the workload's denials per window before
	Examples []string      `json:"examples,omitempty"`
	Message  string        `json:"message"`
}

// Dropped counts the state a Detector had to give up to stay bounded.
type Dropped struct {
	Workloads uint64 `json:"workloads"` // workloads forgotten (least recently seen of a sample)
	Edges     uint64 `json:"edges"`     // edges not remembered: the table was full (and not alerted on)
}

type workload struct {
	seen     time.Time // last flow
	first    time.Time
	window   time.Time // start of the current window
	targets  map[string]struct{}
	scanned  bool // this window's scan alert was raised
	denials  int
	baseline float64
	windows  int // windows counted into baseline
	rose     bool
	hours    uint32 // bit h: hour h (UTC) used
}

// Detector holds the state; it is not safe for concurrent use.
type Detector struct {
	cfg     Config
	start   time.Time
	wls     map[string]*workload
	edges   map[string]struct{}
	dropped Dropped
}

// New returns a Detector whose learning period for edges starts at start.
func New(cfg Config, start time.Time) *Detector {
	return &Detector{cfg: cfg.withDefaults(), start: start, wls: map[string]*workload{}, edges: map[string]struct{}{}}
}

// Dropped reports what was given up so far.
func (d *Detector) Dropped() Dropped { return d.dropped }

func name(e flows.Endpoint) string {
	if e.Workload == "" {
		return ""
	}
	return e.Namespace + "/" + e.Workload
}

func denied(v flows.Verdict) bool {
	return v == flows.Deny || v == flows.Reject || v == flows.Wall || v == flows.WouldDeny
}

// Observe takes one record and returns the alerts it raises.
func (d *Detector) Observe(r *flows.Record) []Alert {
	t := r.End
	if t.IsZero() {
		t = r.Start
	}
	var out []Alert
	if a, ok := d.edge(r, t); ok {
		out = append(out, a)
	}
	src := name(r.Src)
	if src == "" {
		return out
	}
	w := d.workload(src, t)
	if ws := t.Truncate(d.cfg.Window); ws.After(w.window) {
		if !w.window.IsZero() {
			if w.windows == 0 {
				w.baseline = float64(w.denials)
			} else {
				w.baseline = (1-riseAlpha)*w.baseline + riseAlpha*float64(w.denials)
			}
			w.windows++
		}
		w.window, w.targets, w.scanned, w.denials, w.rose = ws, map[string]struct{}{}, false, 0, false
	}
	if h := uint32(1) << t.UTC().Hour(); w.hours&h == 0 {
		if t.Sub(w.first) >= d.cfg.LearnFor {
			out = append(out, d.alert(NewHour, src, t, 0, 1, 0, []string{endpoint(r)},
				fmt.Sprintf("%s: traffic at %02d:00 UTC, an hour it never used", src, t.UTC().Hour())))
		}
		w.hours |= h
	}
	if !denied(r.Verdict) {
		return out
	}
	w.denials++
	if !w.scanned {
		w.targets[endpoint(r)] = struct{}{}
		if len(w.targets) >= d.cfg.ScanDistinct {
			w.scanned = true
			out = append(out, d.alert(Scan, src, w.window, d.cfg.Window, len(w.targets), 0, sample(w.targets),
				fmt.Sprintf("%s: %d distinct denied destinations within %s", src, len(w.targets), d.cfg.Window)))
			w.targets = nil
		}
	}
	if !w.rose && w.windows > 0 && w.denials >= d.cfg.RiseMin && float64(w.denials) > d.cfg.RiseFactor*w.baseline {
		w.rose = true
		out = append(out, d.alert(DenyRise, src, w.window, d.cfg.Window, w.denials, w.baseline, []string{endpoint(r)},
			fmt.Sprintf("%s: %d denials within %s, baseline %.1f", src, w.denials, d.cfg.Window, w.baseline)))
	}
	return out
}

// edge remembers the namespace edge of r, and alerts on a new one after
// the learning period.
func (d *Detector) edge(r *flows.Record, t time.Time) (Alert, bool) {
	from, to := r.Src.Namespace, r.Dst.Namespace
	if from == "" || to == "" || from == to {
		return Alert{}, false
	}
	key := from + " -> " + to
	if _, ok := d.edges[key]; ok {
		return Alert{}, false
	}
	if len(d.edges) >= d.cfg.MaxEdges {
		d.dropped.Edges++
		return Alert{}, false
	}
	d.edges[key] = struct{}{}
	if t.Sub(d.start) < d.cfg.LearnFor {
		return Alert{}, false
	}
	return d.alert(NewEdge, name(r.Src), t, 0, 1, 0, []string{endpoint(r)},
		fmt.Sprintf("new edge between namespaces %s (%s)", key, r.Verdict)), true
}

func (d *Detector) workload(src string, t time.Time) *workload {
	w := d.wls[src]
	if w == nil {
		if len(d.wls) >= d.cfg.MaxWorkloads {
			d.evict()
		}
		w = &workload{first: t}
		d.wls[src] = w
	}
	if t.After(w.seen) {
		w.seen = t
	}
	return w
}

// evict forgets the least recently seen of a few workloads (map order is
// random, so this approximates the least recently seen of all at O(1)).
func (d *Detector) evict() {
	var victim string
	var seen time.Time
	n := 0
	for k, w := range d.wls {
		if victim == "" || w.seen.Before(seen) {
			victim, seen = k, w.seen
		}
		if n++; n == 8 {
			break
		}
	}
	delete(d.wls, victim)
	d.dropped.Workloads++
}

func (d *Detector) alert(kind, wl string, at time.Time, window time.Duration, count int, base float64, ex []string, msg string) Alert {
	// The id names the finding, not the moment: the same scan window, the
	// same edge, the same workload's hour give the same id.
	key := kind + "|" + wl + "|" + at.UTC().Format(time.RFC3339Nano)
	if kind == NewEdge || kind == NewHour {
		key = kind + "|" + wl + "|" + msg
	}
	sum := sha256.Sum256([]byte(key))
	return Alert{ID: kind + "-" + hex.EncodeToString(sum[:6]), Kind: kind, Workload: wl, Time: at.UTC(), Window: window,
		Count: count, Baseline: base, Examples: ex, Message: msg}
}

func endpoint(r *flows.Record) string {
	return fmt.Sprintf("%s:%d/%d", r.Dst.Addr, r.Dst.Port, r.Proto)
}

func sample(set map[string]struct{}) []string {
	var out []string
	for k := range set {
		if len(out) == examples {
			break
		}
		out = append(out, k)
	}
	return out
}
