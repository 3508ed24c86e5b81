// Package client calls a Bulkhead manager's public API (api/manager.go,
// api/openapi.yaml) over HTTPS: the CLI with a bearer token, agents with
// their client certificate. Join buys an agent's certificate with a
// one-time join token; Watch follows the agents' feed.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/pki"
)

// Config says where the manager is and how to prove who we are.
type Config struct {
	URL string // https://HOST:PORT
	// CA is the PEM of the manager's CA; the server must chain to it.
	CA []byte
	// CAHash ("sha256:HEX", from a join token) trusts a server whose
	// chain ends in a CA with that hash, when CA is not known yet.
	CAHash string
	// Token is a bearer token (CLI); Certificate an agent's client
	// certificate. At most one is needed.
	Token       string
	Certificate *tls.Certificate
	// Timeout bounds each request but Watch (default 60 s).
	Timeout time.Duration
	// PageSize is how many items a call that follows pages asks for at
	// once (default 1000, the most the manager answers).
	PageSize int
}

// Client calls one manager. It is safe for concurrent use.
type Client struct {
	base     string
	token    string
	hc       *http.Client // requests
	stream   *http.Client // watches: no overall timeout
	timeout  time.Duration
	pageSize int
}

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("manager client: server %q: want https://HOST:PORT", cfg.URL)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS13}
	switch {
	case len(cfg.CA) > 0:
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.CA) {
			return nil, errors.New("manager client: the CA holds no PEM certificate")
		}
		tc.RootCAs = pool
	case cfg.CAHash != "":
		tc.InsecureSkipVerify = true // verified below, against the hash
		tc.VerifyConnection = verifyByHash(cfg.CAHash)
	}
	if cfg.Certificate != nil {
		tc.Certificates = []tls.Certificate{*cfg.Certificate}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	if cfg.PageSize <= 0 || cfg.PageSize > 1000 {
		cfg.PageSize = 1000
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 4,
		IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second}
	return &Client{base: strings.TrimRight(cfg.URL, "/"), token: cfg.Token, timeout: cfg.Timeout, pageSize: cfg.PageSize,
		hc: &http.Client{Transport: tr}, stream: &http.Client{Transport: tr}}, nil
}

// verifyByHash accepts a server whose certificate chains to a CA, sent in
// the handshake, with the given hash.
func verifyByHash(hash string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		for _, c := range cs.PeerCertificates {
			if !c.IsCA || pki.CertHash(c) != hash {
				continue
			}
			pool := x509.NewCertPool()
			pool.AddCert(c)
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: cs.ServerName})
			return err
		}
		return fmt.Errorf("manager client: the server's CA does not have hash %s", hash)
	}
}

// Error is an error answer from the manager. It matches the fault kind of
// its status: errors.Is(err, fault.Conflict) for a 409.
type Error struct {
	Status int
	api.APIError
}

// Unwrap is the fault kind of the status.
func (e *Error) Unwrap() error { return fault.FromHTTPStatus(e.Status) }

func (e *Error) Error() string {
	msg := fmt.Sprintf("manager: %s (HTTP %d)", e.APIError.Error, e.Status)
	if len(e.Details) > 0 {
		msg += ":\n  " + strings.Join(e.Details, "\n  ")
	}
	return msg
}

// Do calls method path with in as the JSON body (nil: none) and decodes
// the answer into out (nil: discard).
//
// An answer 429 (a bound of the manager's per client) is tried again
// after its Retry-After, a few times, within the request's timeout.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.send(ctx, c.hc, method, path, in)
	for try := 0; err == nil && try < maxRetries && resp.StatusCode == http.StatusTooManyRequests; try++ {
		wait, ok := retryAfter(resp)
		if !ok {
			break
		}
		resp.Body.Close()
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("manager client: %s %s: the manager asked to wait %s: %w", method, path, wait, ctx.Err())
		}
		resp, err = c.send(ctx, c.hc, method, path, in)
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return readError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("manager client: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func (c *Client) send(ctx context.Context, hc *http.Client, method, path string, in any) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("manager client: encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("manager client: %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("manager client: %s %s: %w", method, path, err)
	}
	return resp, nil
}

// maxRetries bounds the tries after a 429; maxRetryAfter the wait asked
// for that is honoured (a longer one is answered as the error it is).
const (
	maxRetries    = 5
	maxRetryAfter = 10 * time.Second
)

func retryAfter(resp *http.Response) (time.Duration, bool) {
	n, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || n < 0 || time.Duration(n)*time.Second > maxRetryAfter {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

func readError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &Error{Status: resp.StatusCode}
	if json.Unmarshal(data, &e.APIError) != nil || e.APIError.Error == "" {
		e.APIError.Error = strings.TrimSpace(string(data))
	}
	return e
}

// Apply sends documents to apply as one revision (POST /v1/apply).
func (c *Client) Apply(ctx context.Context, req api.ManagerApplyRequest) (api.ManagerApplyResult, error) {
	var res api.ManagerApplyResult
	return res, c.Do(ctx, "POST", "/v1/apply", req, &res)
}

// Delete removes the objects the documents name, as one revision.
func (c *Client) Delete(ctx context.Context, req api.ManagerApplyRequest) (api.ManagerApplyResult, error) {
	var res api.ManagerApplyResult
	return res, c.Do(ctx, "POST", "/v1/delete", req, &res)
}

// Objects lists the objects at the head, of the kinds given (comma
// separated kinds or resource names; "" for all).
func (c *Client) Objects(ctx context.Context, kinds string) (api.ObjectList, error) {
	var res api.ObjectList
	return res, c.Do(ctx, "GET", "/v1/objects?kind="+url.QueryEscape(kinds), nil, &res)
}

// RevisionsPage answers one page of the policy revisions, newest first:
// at most limit (0: the manager's default), from cursor ("": the newest;
// else the Next of the page before).
func (c *Client) RevisionsPage(ctx context.Context, limit int, cursor string) (api.RevisionList, error) {
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	path := "/v1/revisions"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var res api.RevisionList
	return res, c.Do(ctx, "GET", path, nil, &res)
}

// Revisions lists every policy revision, newest first, following the
// pages.
func (c *Client) Revisions(ctx context.Context) (api.RevisionList, error) {
	return c.NewestRevisions(ctx, 0)
}

// NewestRevisions lists the newest max policy revisions (0: all), newest
// first, following the pages; Next is set when there are older ones.
func (c *Client) NewestRevisions(ctx context.Context, max int) (api.RevisionList, error) {
	var all api.RevisionList
	cursor := ""
	for range maxPages {
		limit := c.pageSize
		if max > 0 {
			limit = min(limit, max-len(all.Items))
		}
		page, err := c.RevisionsPage(ctx, limit, cursor)
		if err != nil {
			return all, err
		}
		if all.Head == 0 {
			all.Head = page.Head
		}
		all.Items = append(all.Items, page.Items...)
		all.Next = page.Next
		// A cursor names a revision older than the last page's, so the
		// pages end.
		if page.Next == "" || page.Next == cursor || (max > 0 && len(all.Items) >= max) {
			return all, nil
		}
		cursor = page.Next
	}
	return all, fmt.Errorf("manager client: revisions: more than %d pages", maxPages)
}

// maxPages bounds the pages a call follows.
const maxPages = 1 << 20

// Diff lists what changed from revision from to revision to (0: defaults).
func (c *Client) Diff(ctx context.Context, from, to int64) (api.RevisionDiff, error) {
	q := url.Values{}
	if from > 0 {
		q.Set("from", strconv.FormatInt(from, 10))
	}
	if to > 0 {
		q.Set("to", strconv.FormatInt(to, 10))
	}
	var res api.RevisionDiff
	return res, c.Do(ctx, "GET", "/v1/revisions/diff?"+q.Encode(), nil, &res)
}

// Rollback makes revision rev's objects the head again, as a new revision.
func (c *Client) Rollback(ctx context.Context, rev int64, req api.RollbackRequest) (api.ManagerApplyResult, error) {
	var res api.ManagerApplyResult
	return res, c.Do(ctx, "POST", fmt.Sprintf("/v1/revisions/%d/rollback", rev), req, &res)
}

// Workloads lists the workloads of every host (host "" ) or of one.
func (c *Client) Workloads(ctx context.Context, host string) (api.WorkloadList, error) {
	var res api.WorkloadList
	return res, c.Do(ctx, "GET", "/v1/workloads?host="+url.QueryEscape(host), nil, &res)
}

// Hosts lists the hosts.
func (c *Client) Hosts(ctx context.Context) (api.HostList, error) {
	var res api.HostList
	return res, c.Do(ctx, "GET", "/v1/hosts", nil, &res)
}

// DeleteWorkload removes a workload record (an operator clearing what a
// lost host left behind).
func (c *Client) DeleteWorkload(ctx context.Context, host, namespace, name string) error {
	return c.Do(ctx, "DELETE", "/v1/workloads/"+host+"/"+namespace+"/"+name, nil, nil)
}

// HostBounds returns what host may claim in its reports.
func (c *Client) HostBounds(ctx context.Context, host string) (api.HostBounds, error) {
	var res api.HostBounds
	return res, c.Do(ctx, "GET", "/v1/hosts/"+host+"/bounds", nil, &res)
}

// SetHostBounds sets what host may claim in its reports (admin).
func (c *Client) SetHostBounds(ctx context.Context, host string, b api.HostBounds) (api.HostBounds, error) {
	var res api.HostBounds
	return res, c.Do(ctx, "PUT", "/v1/hosts/"+host+"/bounds", b, &res)
}

// Identities lists the identities with the addresses behind each.
func (c *Client) Identities(ctx context.Context) (api.IdentityList, error) {
	var res api.IdentityList
	return res, c.Do(ctx, "GET", "/v1/identities", nil, &res)
}

// CreateToken creates an API token; the answer holds its secret.
func (c *Client) CreateToken(ctx context.Context, name, role string) (api.Token, error) {
	var res api.Token
	return res, c.Do(ctx, "POST", "/v1/tokens", api.TokenRequest{Name: name, Role: role}, &res)
}

// Tokens lists the API tokens (without secrets).
func (c *Client) Tokens(ctx context.Context) ([]api.Token, error) {
	var res []api.Token
	return res, c.Do(ctx, "GET", "/v1/tokens", nil, &res)
}

// RevokeToken deletes an API token.
func (c *Client) RevokeToken(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", "/v1/tokens/"+url.PathEscape(name), nil, nil)
}

// CreateJoinToken creates a one-time join token for host.
func (c *Client) CreateJoinToken(ctx context.Context, host string, ttl time.Duration) (api.JoinToken, error) {
	req := api.JoinTokenRequest{Host: host}
	if ttl > 0 {
		req.TTL = ttl.String()
	}
	var res api.JoinToken
	return res, c.Do(ctx, "POST", "/v1/jointokens", req, &res)
}

// Certificates lists the agents' certificates.
func (c *Client) Certificates(ctx context.Context) ([]api.Certificate, error) {
	var res []api.Certificate
	return res, c.Do(ctx, "GET", "/v1/certificates", nil, &res)
}

// RevokeCertificate revokes an agent's certificate by serial.
func (c *Client) RevokeCertificate(ctx context.Context, serial string) (api.Certificate, error) {
	var res api.Certificate
	return res, c.Do(ctx, "POST", "/v1/certificates/"+url.PathEscape(serial)+"/revoke", nil, &res)
}

// Audit reads audit entries from seq from on.
func (c *Client) Audit(ctx context.Context, from uint64, limit int) (api.AuditList, error) {
	var res api.AuditList
	return res, c.Do(ctx, "GET", fmt.Sprintf("/v1/audit?from=%d&limit=%d", from, limit), nil, &res)
}

// VerifyAudit asks the manager to verify the audit chain.
func (c *Client) VerifyAudit(ctx context.Context) (api.AuditVerify, error) {
	var res api.AuditVerify
	return res, c.Do(ctx, "GET", "/v1/audit/verify", nil, &res)
}

// JoinTokens lists the join tokens (never their secrets).
func (c *Client) JoinTokens(ctx context.Context) ([]api.JoinTokenInfo, error) {
	var res []api.JoinTokenInfo
	return res, c.Do(ctx, "GET", "/v1/jointokens", nil, &res)
}

// RevokeJoinToken deletes a join token by its id.
func (c *Client) RevokeJoinToken(ctx context.Context, id string) error {
	return c.Do(ctx, "DELETE", "/v1/jointokens/"+url.PathEscape(id), nil, nil)
}

// RevokeHost revokes every certificate of host and its unused join tokens.
func (c *Client) RevokeHost(ctx context.Context, host string) (api.HostRevocation, error) {
	var res api.HostRevocation
	return res, c.Do(ctx, "POST", "/v1/hosts/"+url.PathEscape(host)+"/revoke", nil, &res)
}

// Bindings lists the Brewer–Nash bindings in force.
func (c *Client) Bindings(ctx context.Context) (api.BindingList, error) {
	var res api.BindingList
	return res, c.Do(ctx, "GET", "/v1/bindings", nil, &res)
}

// ClearBinding clears the workload's binding in class (admins only).
func (c *Client) ClearBinding(ctx context.Context, namespace, name, class string) (api.Binding, error) {
	var res api.Binding
	return res, c.Do(ctx, "DELETE", bindingPath(namespace, name, class), nil, &res)
}

// EndBinding ends the workload's session in class.
func (c *Client) EndBinding(ctx context.Context, namespace, name, class string) (api.Binding, error) {
	var res api.Binding
	return res, c.Do(ctx, "POST", bindingPath(namespace, name, class)+"/end", nil, &res)
}

func bindingPath(namespace, name, class string) string {
	return "/v1/bindings/" + url.PathEscape(namespace) + "/" + url.PathEscape(name) + "/" + url.PathEscape(class)
}
