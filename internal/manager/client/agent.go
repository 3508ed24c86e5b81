package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/pki"
)

// Credentials are what an agent keeps after joining: its key, its
// certificate and the CA, all PEM.
type Credentials struct {
	Host   string
	Key    []byte
	Cert   []byte
	CA     []byte
	Serial string
}

// TLS returns the credentials as a client certificate.
func (c *Credentials) TLS() (tls.Certificate, error) {
	cert, err := tls.X509KeyPair(c.Cert, c.Key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("manager client: credentials of host %s: %w", c.Host, err)
	}
	return cert, nil
}

// Client returns a client that authenticates with the credentials.
func (c *Credentials) Client(serverURL string) (*Client, error) {
	cert, err := c.TLS()
	if err != nil {
		return nil, err
	}
	return New(Config{URL: serverURL, CA: c.CA, Certificate: &cert})
}

// Files in an agent's credentials directory.
const (
	KeyFile  = "agent.key"
	CertFile = "agent.crt"
	CAFile   = "ca.crt"
)

// Save writes the credentials to dir: the key 0600.
func (c *Credentials) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("manager client: %w", err)
	}
	for name, data := range map[string][]byte{KeyFile: c.Key, CertFile: c.Cert, CAFile: c.CA} {
		mode := os.FileMode(0o644)
		if name == KeyFile {
			mode = 0o600
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, mode); err != nil {
			return fmt.Errorf("manager client: save credentials: %w", err)
		}
	}
	return nil
}

// LoadCredentials reads what Save wrote.
func LoadCredentials(dir string) (*Credentials, error) {
	c := &Credentials{}
	for name, dst := range map[string]*[]byte{KeyFile: &c.Key, CertFile: &c.Cert, CAFile: &c.CA} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("manager client: load credentials: %w", err)
		}
		*dst = data
	}
	cert, err := pki.ParseCertificate(c.Cert)
	if err != nil {
		return nil, err
	}
	if c.Host, err = pki.HostOf(cert); err != nil {
		return nil, err
	}
	c.Serial = pki.Serial(cert)
	return c, nil
}

// Join buys a client certificate for host with a one-time join token.
// The server is trusted by ca (PEM) if given, else by caHash (from the
// join token).
func Join(ctx context.Context, serverURL string, ca []byte, caHash, joinToken, host string) (*Credentials, error) {
	c, err := New(Config{URL: serverURL, CA: ca, CAHash: caHash})
	if err != nil {
		return nil, err
	}
	key, csr, err := pki.NewCSR(host)
	if err != nil {
		return nil, err
	}
	var res api.JoinResult
	if err := c.Do(ctx, "POST", "/v1/join", api.JoinRequest{Token: joinToken, CSR: string(csr)}, &res); err != nil {
		return nil, err
	}
	return &Credentials{Host: res.Host, Key: key, Cert: []byte(res.Certificate), CA: []byte(res.CA), Serial: res.Serial}, nil
}

// Renew buys a new certificate for the client's host with its current one.
func (c *Client) Renew(ctx context.Context, host string) (*Credentials, error) {
	key, csr, err := pki.NewCSR(host)
	if err != nil {
		return nil, err
	}
	var res api.JoinResult
	if err := c.Do(ctx, "POST", "/v1/renew", api.JoinRequest{CSR: string(csr)}, &res); err != nil {
		return nil, err
	}
	return &Credentials{Host: res.Host, Key: key, Cert: []byte(res.Certificate), CA: []byte(res.CA), Serial: res.Serial}, nil
}

// ReportWorkloads sends the host's workloads: replace=true sends the
// whole set (PUT), else additions and updates plus deleted
// ("namespace/name") (POST).
func (c *Client) ReportWorkloads(ctx context.Context, host string, ws []api.HostWorkload, deleted []string, replace bool) (api.ReportResult, error) {
	method := "POST"
	if replace {
		method = "PUT"
	}
	var res api.ReportResult
	return res, c.Do(ctx, method, "/v1/hosts/"+host+"/workloads", api.WorkloadReport{Workloads: ws, Deleted: deleted}, &res)
}

// ReportStatus tells the manager the revision the host enforces.
func (c *Client) ReportStatus(ctx context.Context, host string, st api.HostStatus) error {
	return c.Do(ctx, "PUT", "/v1/hosts/"+host+"/status", st, nil)
}

// Watch follows the feed from revision from (0: a snapshot first),
// calling fn for each event in order, until ctx ends, fn fails, or the
// stream ends. It returns the revision to resume from: the last "rev"
// event's Rev + 1 (from itself if none came). After a "snapshot" or
// "resync" event the reader must drop what it had and rebuild from the
// events up to the next "rev".
func (c *Client) Watch(ctx context.Context, from int64, fn func(api.FeedEvent) error) (int64, error) {
	resp, err := c.send(ctx, c.stream, "GET", "/v1/watch?from="+strconv.FormatInt(from, 10), nil)
	if err != nil {
		return from, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return from, readError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	next := from
	for sc.Scan() {
		var ev api.FeedEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return next, fmt.Errorf("manager client: watch: bad line: %w", err)
		}
		if err := fn(ev); err != nil {
			return next, err
		}
		if ev.Type == api.FeedRev {
			next = ev.Rev + 1
		}
		if ev.Type == api.FeedCutoff {
			return next, fmt.Errorf("manager client: watch cut off: %s", ev.Reason)
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return next, fmt.Errorf("manager client: watch: %w", err)
	}
	return next, ctx.Err()
}

// Backoff returns the wait before reconnect attempt n (0-based): doubling
// from 100 ms to 10 s.
func Backoff(n int) time.Duration {
	d := 100 * time.Millisecond << min(n, 7)
	return min(d, 10*time.Second)
}
