package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/bulkhead-dev/bulkhead/api"
)

// Escalate asks the manager about a held connection (POST
// /v1/escalations, an agent's client only) and waits for its decision,
// bounded by ctx alone: a person may take minutes. The caller's context
// should end at the request's deadline.
func (c *Client) Escalate(ctx context.Context, req api.EscalationRequest) (api.EscalationDecision, error) {
	var d api.EscalationDecision
	resp, err := c.send(ctx, c.stream, "POST", "/v1/escalations", req)
	if err != nil {
		return d, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return d, readError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		return d, fmt.Errorf("manager client: POST /v1/escalations: decode answer: %w", err)
	}
	return d, nil
}

func escalationsPath(state string, follow bool) string {
	q := url.Values{}
	if state != "" {
		q.Set("state", state)
	}
	if follow {
		q.Set("follow", "1")
	}
	if len(q) == 0 {
		return "/v1/escalations"
	}
	return "/v1/escalations?" + q.Encode()
}

// Escalations lists the escalations the manager recorded, the newest
// first; state "held" or "decided" chooses ("": all).
func (c *Client) Escalations(ctx context.Context, state string) (api.EscalationList, error) {
	var out api.EscalationList
	err := c.Do(ctx, "GET", escalationsPath(state, false), nil, &out)
	return out, err
}

// FollowEscalations calls fn with the current escalations, oldest first,
// then with each as it changes, until ctx ends, fn fails or the manager
// ends the stream.
func (c *Client) FollowEscalations(ctx context.Context, state string, fn func(api.Escalation) error) error {
	resp, err := c.send(ctx, c.stream, "GET", escalationsPath(state, true), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue // a heartbeat
		}
		var e api.Escalation
		if err := json.Unmarshal(line, &e); err != nil {
			return fmt.Errorf("manager client: follow escalations: bad line: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("manager client: follow escalations: %w", err)
	}
	return ctx.Err()
}

// ApproveEscalation lets a held escalation through (operator, admin).
func (c *Client) ApproveEscalation(ctx context.Context, id, reason string) (api.Escalation, error) {
	var out api.Escalation
	err := c.Do(ctx, "POST", "/v1/escalations/"+url.PathEscape(id)+"/approve", api.EscalationAnswer{Reason: reason}, &out)
	return out, err
}

// DenyEscalation drops a held escalation (operator, admin).
func (c *Client) DenyEscalation(ctx context.Context, id, reason string) (api.Escalation, error) {
	var out api.Escalation
	err := c.Do(ctx, "POST", "/v1/escalations/"+url.PathEscape(id)+"/deny", api.EscalationAnswer{Reason: reason}, &out)
	return out, err
}
