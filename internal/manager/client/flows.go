package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/flows"
)

// FlowSink sends an agent's flow batches to the manager over the agent's
// mutual-TLS client: it is the flows.Sink of a managed agent.
type FlowSink struct{ Client *Client }

// Send posts one batch (POST /v1/flows); the manager counts a batch it
// has seen once, so a retry after an error is safe.
func (s FlowSink) Send(ctx context.Context, b *flows.Batch) error {
	return s.Client.Do(ctx, "POST", "/v1/flows", b, nil)
}

// Flows asks for the newest flows that match q (url.Values of GET
// /v1/flows's parameters).
func (c *Client) Flows(ctx context.Context, q url.Values) (api.FlowList, error) {
	var out api.FlowList
	err := c.Do(ctx, "GET", "/v1/flows?"+q.Encode(), nil, &out)
	return out, err
}

// FlowCounts asks what was lost, suppressed and hit.
func (c *Client) FlowCounts(ctx context.Context) (api.FlowCounts, error) {
	var out api.FlowCounts
	err := c.Do(ctx, "GET", "/v1/flows/counts", nil, &out)
	return out, err
}

// FollowFlows streams the flows that match q, the newest stored first,
// then each as it arrives, calling fn for each until ctx ends, fn fails
// or the manager ends the stream.
func (c *Client) FollowFlows(ctx context.Context, q url.Values, fn func(api.Flow) error) error {
	q.Set("follow", "1")
	resp, err := c.send(ctx, c.stream, "GET", "/v1/flows?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue // a heartbeat
		}
		var f api.Flow
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			return fmt.Errorf("manager client: follow flows: bad line: %w", err)
		}
		if err := fn(f); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("manager client: follow flows: %w", err)
	}
	return ctx.Err()
}
