package manager

import (
	"sync"

	"github.com/bulkhead-dev/bulkhead/internal/flows"
	"github.com/bulkhead-dev/bulkhead/internal/manager/alerting"
)

// flowDetector runs the flow detectors (internal/manager/alerting) over
// every batch the store took, with the default thresholds; its zero value
// starts learning at the first batch.
type flowDetector struct {
	mu sync.Mutex
	d  *alerting.Detector
}

// detectFlows feeds a stored batch's records to the detectors and raises
// what they find (GET /v1/alerts, audited as "alert.KIND"; the object is
// the finding's stable id, so a finding is raised once).
func (m *Manager) detectFlows(recs []flows.Record) {
	fd := &m.flowAlerts
	fd.mu.Lock()
	if fd.d == nil {
		fd.d = alerting.New(alerting.Config{}, m.now())
	}
	var found []alerting.Alert
	for i := range recs {
		found = append(found, fd.d.Observe(&recs[i])...)
	}
	fd.mu.Unlock()
	for _, a := range found {
		m.raise(a.Kind, a.ID, a.Message)
	}
}
