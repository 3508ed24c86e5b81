package api

import "github.com/bulkhead-dev/bulkhead/internal/flows"

// Flow is one flow as the manager stores it: the record an agent sent,
// the host that sent it (from its client certificate, never from the
// body), and the number the store gave it, increasing in the order the
// store received flows.
type Flow struct {
	ID   uint64 `json:"id"`
	Host string `json:"host"`
	flows.Record
}

// FlowList answers GET /v1/flows: the newest Limit flows that match, in
// time order (oldest first). Truncated says that more matched.
type FlowList struct {
	Flows     []Flow `json:"flows"`
	Truncated bool   `json:"truncated,omitempty"`
}

// RuleHits counts what one rule decided: the flows stored that name it,
// and the packets whose log records the kernel's rate limit suppressed.
type RuleHits struct {
	Flows      uint64 `json:"flows"`
	Suppressed uint64 `json:"suppressed,omitempty"`
}

// FlowCounts answers GET /v1/flows/counts: what the agents reported lost
// (by host and cause) and suppressed (by host and "kind id"), the hits of
// each rule, and what the store itself did.
type FlowCounts struct {
	Stored     uint64                            `json:"stored"`     // flows stored since the store was made
	Batches    uint64                            `json:"batches"`    // batches taken
	Duplicates uint64                            `json:"duplicates"` // batches taken again (a (stream, seq) seen) and not counted
	Expired    uint64                            `json:"expired"`    // flows dropped by retention by age
	Evicted    uint64                            `json:"evicted"`    // flows dropped by retention by size (oldest first)
	Lost       map[string]map[flows.Cause]uint64 `json:"lost,omitempty"`
	Suppressed map[string]map[string]uint64      `json:"suppressed,omitempty"`
	Rules      map[string]RuleHits               `json:"rules,omitempty"`
}
