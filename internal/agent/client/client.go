// Package client calls a Bulkhead agent's local API (api/agent.go) over
// its unix socket. The CLI (`bulkhead --agent unix://PATH …`), the CNI
// plugin and the Docker driver use it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// DefaultSocket is where an agent listens unless told otherwise.
const DefaultSocket = "/run/bulkhead/agent.sock"

// Client talks to one agent. It is safe for concurrent use.
type Client struct {
	socket string
	hc     *http.Client
}

// New returns a client for the agent at target: "unix:///path/to.sock"
// or a plain socket path.
func New(target string) (*Client, error) {
	path := target
	if strings.Contains(target, "://") {
		u, err := url.Parse(target)
		if err != nil || u.Scheme != "unix" || u.Path == "" {
			return nil, fmt.Errorf("agent client: %q: want unix:///path/to/agent.sock", target)
		}
		path = u.Path
	}
	if path == "" {
		return nil, errors.New("agent client: no socket path given")
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:    4,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{socket: path, hc: &http.Client{Transport: tr}}, nil
}

// Socket is the socket path the client dials.
func (c *Client) Socket() string { return c.socket }

// ErrNoAgent is what every call returns (errors.Is) when nothing listens
// on the socket.
var ErrNoAgent = errors.New("no agent")

type noAgentError struct {
	socket string
	err    error
}

func (e *noAgentError) Error() string {
	why := e.err
	var errno syscall.Errno
	if errors.As(e.err, &errno) {
		why = errno
	}
	return fmt.Sprintf("no agent at unix://%s: is `bulkhead agent --standalone` running? (%v)", e.socket, why)
}

func (e *noAgentError) Unwrap() []error { return []error{ErrNoAgent, e.err} }

// Error is an error answer from the agent. It matches the fault kind of
// its status: errors.Is(err, fault.Conflict) for a 409.
type Error struct {
	Status int
	api.APIError
}

// Unwrap is the fault kind of the status.
func (e *Error) Unwrap() error { return fault.FromHTTPStatus(e.Status) }

func (e *Error) Error() string {
	msg := e.APIError.Error
	if len(e.Details) > 0 {
		msg += ":\n  " + strings.Join(e.Details, "\n  ")
	}
	return msg
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("agent client: encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, body)
	if err != nil {
		return fmt.Errorf("agent client: %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return &noAgentError{socket: c.socket, err: err}
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("agent client: permission denied on unix://%s: only root and the agent's own user may use the agent: %w", c.socket, err)
	case err != nil:
		return fmt.Errorf("agent client: %s %s on %s: %w", method, path, c.socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("agent client: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(data, &e.APIError) != nil || e.APIError.Error == "" {
			e.APIError.Error = fmt.Sprintf("agent: %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))
		}
		return e
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("agent client: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// Health asks whether the agent is up; it needs no credentials.
func (c *Client) Health(ctx context.Context) (api.Health, error) {
	var h api.Health
	return h, c.do(ctx, http.MethodGet, "/v1/health", nil, &h)
}

// Status reports the agent's state.
func (c *Client) Status(ctx context.Context) (api.AgentStatus, error) {
	var s api.AgentStatus
	return s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Apply adds or updates the objects of docs and returns once the kernel
// enforces them.
func (c *Client) Apply(ctx context.Context, req api.ApplyRequest) (api.ApplyResult, error) {
	var r api.ApplyResult
	return r, c.do(ctx, http.MethodPost, "/v1/apply", req, &r)
}

// Delete removes the objects docs name and returns once the kernel
// enforces the result.
func (c *Client) Delete(ctx context.Context, req api.ApplyRequest) (api.ApplyResult, error) {
	var r api.ApplyResult
	return r, c.do(ctx, http.MethodPost, "/v1/delete", req, &r)
}

// Objects lists stored objects, of one kind when kind is not empty.
func (c *Client) Objects(ctx context.Context, kind string) (api.ObjectList, error) {
	var l api.ObjectList
	path := "/v1/objects"
	if kind != "" {
		path += "?kind=" + url.QueryEscape(kind)
	}
	return l, c.do(ctx, http.MethodGet, path, nil, &l)
}

// Explain judges one hypothetical connection against the live state. The
// answer is the JSON report of `bulkhead explain -o json`.
func (c *Client) Explain(ctx context.Context, req api.ExplainRequest) (json.RawMessage, error) {
	var r json.RawMessage
	return r, c.do(ctx, http.MethodPost, "/v1/explain", req, &r)
}

// Workloads lists the registered local workloads.
func (c *Client) Workloads(ctx context.Context) ([]api.WorkloadRegistration, error) {
	var l []api.WorkloadRegistration
	return l, c.do(ctx, http.MethodGet, "/v1/workloads", nil, &l)
}

// RegisterWorkload adds or updates a local workload and returns once its
// policy is enforced.
func (c *Client) RegisterWorkload(ctx context.Context, w api.WorkloadRegistration) (api.WorkloadRegistration, error) {
	var r api.WorkloadRegistration
	return r, c.do(ctx, http.MethodPost, "/v1/workloads", w, &r)
}

// UnregisterWorkload removes a local workload; removing one that is not
// there is not an error.
func (c *Client) UnregisterWorkload(ctx context.Context, namespace, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/workloads/"+url.PathEscape(namespace)+"/"+url.PathEscape(name), nil, nil)
}

// UnregisterWorkloadOn removes a local workload only if it is registered
// on the host interface hostIf: a CNI DEL removes its own registration,
// never one that another attachment holds under the same name.
func (c *Client) UnregisterWorkloadOn(ctx context.Context, namespace, name, hostIf string) error {
	return c.do(ctx, http.MethodDelete, "/v1/workloads/"+url.PathEscape(namespace)+"/"+url.PathEscape(name)+
		"?interface="+url.QueryEscape(hostIf), nil, nil)
}

// Counters reads the dataplane's counters.
func (c *Client) Counters(ctx context.Context) (api.Counters, error) {
	var r api.Counters
	return r, c.do(ctx, http.MethodGet, "/v1/counters", nil, &r)
}
