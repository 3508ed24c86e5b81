package manager

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/credentials"
)

// The agents' feed is served by internal/manager/feed; here is its
// handler, which checks the watch's credentials again at every
// heartbeat.

func (m *Manager) getWatch(w http.ResponseWriter, r *http.Request, p principal) error {
	var from int64
	if s := r.URL.Query().Get("from"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return fault.New(fault.BadRequest, nil, "from: %q: want a revision (the last \"rev\" line's rev + 1), or 0 for a snapshot", s)
		}
		from = n
	}
	m.feedServer.Serve(r.Context(), w, from, func() error { return m.stillValid(p) })
	return nil
}

// stillValid checks a token or an agent's certificate again, for
// long-lived streams.
func (m *Manager) stillValid(p principal) error {
	switch p.kind {
	case "token":
		if _, ok := m.tab.tokens.Get(credentials.PrefixTokens + p.hash); !ok {
			return fmt.Errorf("token %s was revoked", p.name)
		}
		return nil
	case "":
		return nil
	}
	c, ok := m.tab.certs.Get(credentials.PrefixCerts + p.serial)
	if !ok {
		return fmt.Errorf("client certificate %s of host %s is no longer in the records", p.serial, p.name)
	}
	if c.Revoked != nil {
		return fmt.Errorf("client certificate %s of host %s was revoked by %s", p.serial, p.name, c.RevokedBy)
	}
	return nil
}
