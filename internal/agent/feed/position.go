package feed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
)

// positionFile keeps where to resume the feed: the revision after the
// last one the agent realized, and the manager it came from.
const positionFile = "feed.json"

type position struct {
	Manager string `json:"manager"`
	Next    int64  `json:"next"`
}

// Join returns the credentials in dir, or, when there are none, buys a
// client certificate for host with a one-time join token and saves it
// there (the key 0600). The manager is trusted by ca (PEM) if given,
// else by caHash ("sha256:…", printed with the join token).
func Join(ctx context.Context, dir, url string, ca []byte, caHash, token, host string) (*client.Credentials, error) {
	if c, err := client.LoadCredentials(dir); err == nil {
		if host != "" && c.Host != host {
			return nil, fmt.Errorf("feed: %s holds credentials for host %s, not %s; use another state directory, or remove them to join again", dir, c.Host, host)
		}
		return c, nil
	} else if _, statErr := os.Stat(filepath.Join(dir, client.CertFile)); statErr == nil {
		return nil, fmt.Errorf("feed: the credentials in %s do not load: %w", dir, err)
	}
	switch {
	case token == "":
		return nil, fmt.Errorf("feed: %s holds no credentials: join with a token (bulkhead token create --join --host %s)", dir, host)
	case len(ca) == 0 && caHash == "":
		return nil, errors.New("feed: to join, the manager must be trusted: give its CA hash (printed with the join token) or its CA certificate")
	}
	c, err := client.Join(ctx, url, ca, caHash, token, host)
	if err != nil {
		return nil, fmt.Errorf("feed: join %s as host %s: %w", url, host, err)
	}
	if err := c.Save(dir); err != nil {
		return nil, err
	}
	return c, nil
}

// loadPosition is the revision to resume from: 0 (a snapshot) when none
// was saved, it was for another manager, or the agent holds nothing.
func (f *Follower) loadPosition() int64 {
	data, err := os.ReadFile(filepath.Join(f.opts.Dir, positionFile))
	if err != nil {
		return 0
	}
	var p position
	if json.Unmarshal(data, &p) != nil || p.Manager != f.opts.URL || len(f.opts.Agent.Objects().Items) == 0 {
		return 0
	}
	return p.Next
}

// savePosition replaces the position file atomically.
func (f *Follower) savePosition(next int64) error {
	data, _ := json.Marshal(position{Manager: f.opts.URL, Next: next})
	p := filepath.Join(f.opts.Dir, positionFile)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("feed: write %s: %w", p, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("feed: write %s: %w", p, err)
	}
	return nil
}
