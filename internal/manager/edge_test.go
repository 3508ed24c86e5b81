package manager_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager"
)

// rawClient is an HTTPS client of e's manager that sends what it is
// given; h2 chooses HTTP/2, else HTTP/1.1.
func (e *env) rawClient(h2 bool) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.m.CAPEM())
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}, ForceAttemptHTTP2: h2}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// do sends one request and returns the status, Retry-After and body.
func (e *env) do(hc *http.Client, method, path, auth string, body []byte) (int, string, string) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(ctx(e.t), method, e.m.URL()+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if body == nil {
		req.Body = http.NoBody
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := hc.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(data)
}

// dialTLS opens an HTTP/1.1 TLS connection to the manager.
func (e *env) dialTLS() *tls.Conn {
	e.t.Helper()
	c, err := e.tryDialTLS()
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// tryDialTLS is dialTLS for other goroutines than the test's.
func (e *env) tryDialTLS() (*tls.Conn, error) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.m.CAPEM())
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", e.m.Addr().String(),
		&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
	if err != nil {
		return nil, err
	}
	e.t.Cleanup(func() { c.Close() })
	return c, nil
}

// readUntilClosed reads what the server sends until it closes the
// connection or bound passes, and says how long that took.
func readUntilClosed(t *testing.T, c net.Conn, bound time.Duration) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(bound))
	data, err := io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server still held the connection after %s; it sent %q", bound, data)
	}
	return string(data), time.Since(start)
}

// A public route takes a body of kilobytes, not the 32 MiB of an admin's
// apply, and refuses a larger one before reading it.
func TestJoinBodyLimit(t *testing.T) {
	e := start(t)
	hc := e.rawClient(false)
	big := fmt.Appendf(nil, `{"token":"bhj_x","csr":"%s"}`, strings.Repeat("A", 64<<10))
	code, _, body := e.do(hc, "POST", "/v1/join", "", big)
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "16384 bytes") {
		t.Fatalf("a 64 KiB join: %d %s", code, body)
	}
	// Without a Content-Length (chunked) the reader stops at the limit.
	req, _ := http.NewRequestWithContext(ctx(t), "POST", e.m.URL()+"/v1/join", io.MultiReader(bytes.NewReader(big)))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("a chunked 64 KiB join: %d", resp.StatusCode)
	}
	// Over HTTP/2 too.
	code, _, body = e.do(e.rawClient(true), "POST", "/v1/join", "", big)
	if code != http.StatusRequestEntityTooLarge {
		t.Fatalf("a 64 KiB join over HTTP/2: %d %s", code, body)
	}
}

// A client that sends its body slowly is cut off at the body deadline;
// one that sends its headers slowly at the header deadline.
func TestSlowClientsAreCutOff(t *testing.T) {
	e := start(t, func(c *manager.Config) {
		c.Limits = manager.Limits{PublicBodyTimeout: 300 * time.Millisecond, ReadHeaderTimeout: 300 * time.Millisecond}
	})
	c := e.dialTLS()
	fmt.Fprintf(c, "POST /v1/join HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{\"token\":")
	got, took := readUntilClosed(t, c, 5*time.Second)
	if !strings.Contains(got, " 408 ") || took > 3*time.Second {
		t.Fatalf("a slow body: after %s the server sent %q", took, got)
	}
	c = e.dialTLS()
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	if _, took := readUntilClosed(t, c, 5*time.Second); took > 3*time.Second {
		t.Fatalf("slow headers held for %s", took)
	}
}

// A watch stream outlives the read and write timeouts (which bound each
// write of a stream, not the stream), over HTTP/1.1 and HTTP/2.
func TestWatchOutlivesTimeouts(t *testing.T) {
	const short = 100 * time.Millisecond
	e := start(t, func(c *manager.Config) {
		c.Heartbeat = 50 * time.Millisecond
		c.Limits = manager.Limits{ReadHeaderTimeout: short, BodyTimeout: short, WriteTimeout: short, IdleTimeout: short}
	})
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctx(t), "GET", e.m.URL()+"/v1/watch?from=0", nil)
			req.Header.Set("Authorization", "Bearer "+e.m.AdminToken())
			hc := e.rawClient(h2)
			hc.Timeout = 0
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if (resp.ProtoMajor == 2) != h2 {
				t.Fatalf("protocol %s", resp.Proto)
			}
			sc := bufio.NewScanner(resp.Body)
			start, heartbeats := time.Now(), 0
			for time.Since(start) < 8*short && sc.Scan() {
				if strings.Contains(sc.Text(), `"heartbeat"`) {
					heartbeats++
				} else {
					t.Logf("%s", sc.Text())
				}
			}
			if time.Since(start) < 8*short {
				t.Fatalf("the stream ended after %s (%d heartbeats): %v", time.Since(start), heartbeats, sc.Err())
			}
		})
	}
}

// The Authorization scheme is matched without regard to case (RFC 7235).
func TestBearerSchemeIgnoresCase(t *testing.T) {
	e := start(t)
	hc := e.rawClient(false)
	tok := e.m.AdminToken()
	for _, h := range []string{"Bearer " + tok, "bearer " + tok, "BEARER " + tok, "bEaReR  " + tok} {
		if code, _, body := e.do(hc, "GET", "/v1/objects", h, nil); code != http.StatusOK {
			t.Errorf("%.10q…: %d %s", h, code, body)
		}
	}
	for _, h := range []string{"Basic " + tok, "Bearer", "Bearer ", "Bearertoken " + tok, tok, "Bearer " + tok + " extra"} {
		if code, _, _ := e.do(hc, "GET", "/v1/objects", h, nil); code != http.StatusUnauthorized {
			t.Errorf("%.16q…: %d, want 401", h, code)
		}
	}
}

// Request bodies are decoded exactly: no case-folded or repeated keys, no
// invalid UTF-8.
func TestStrictRequestBodies(t *testing.T) {
	e := start(t)
	hc := e.rawClient(false)
	auth := "Bearer " + e.m.AdminToken()
	for _, c := range []struct{ body, want string }{
		{`{"Name":"alice","role":"auditor"}`, `did you mean \"name\"?`},
		{`{"name":"alice","role":"auditor","role":"admin"}`, `field \"role\" at byte 39 is given twice`},
		{"{\"name\":\"al\xffice\",\"role\":\"auditor\"}", `invalid UTF-8 at byte 11`},
		{`{"name":"al\udfffice","role":"auditor"}`, `lone UTF-16 surrogate`},
	} {
		code, _, body := e.do(hc, "POST", "/v1/tokens", auth, []byte(c.body))
		if code != http.StatusBadRequest || !strings.Contains(body, c.want) {
			t.Errorf("%q: %d %s, want 400 with %s", c.body, code, body, c.want)
		}
	}
	toks, err := e.admin.Tokens(ctx(t))
	if err != nil || len(toks) != 1 {
		t.Fatalf("tokens after refused requests: %v %v", toks, err)
	}
}

// Past its bound of streams, a token is answered 429 with Retry-After;
// other tokens are not affected, and a slot comes back when a stream ends.
func TestStreamsPerPrincipal(t *testing.T) {
	e := start(t, func(c *manager.Config) { c.Limits = manager.Limits{Streams: 3} })
	tok, err := e.admin.CreateToken(ctx(t), "auditor", api.RoleAuditor)
	if err != nil {
		t.Fatal(err)
	}
	hc := e.rawClient(true)
	hc.Timeout = 0
	open := func(secret string) *http.Response {
		req, _ := http.NewRequestWithContext(ctx(t), "GET", e.m.URL()+"/v1/watch", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	var held []*http.Response
	for range 3 {
		resp := open(tok.Secret)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("watch %d: %d", len(held), resp.StatusCode)
		}
		held = append(held, resp)
	}
	resp := open(tok.Secret)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "too many watch streams for token:auditor") {
		t.Fatalf("the 4th watch: %d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if other := open(e.m.AdminToken()); other.StatusCode != http.StatusOK {
		t.Fatalf("another token's watch: %d", other.StatusCode)
	} else {
		other.Body.Close()
	}
	held[0].Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp := open(tok.Secret)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot came back after a watch ended: %d", resp.StatusCode)
		}
		time.Sleep(20 * time.Millisecond) // polling the condition, bounded by deadline
	}
	for _, r := range held[1:] {
		r.Body.Close()
	}
}

// Past its bound of requests in flight (here held by bodies that never
// finish), a token is answered 429; others are served.
func TestRequestsPerPrincipal(t *testing.T) {
	e := start(t, func(c *manager.Config) { c.Limits = manager.Limits{Requests: 2} })
	tok := e.m.AdminToken()
	auditor := e.token("auditor", api.RoleAuditor)
	for range 2 {
		c := e.dialTLS()
		fmt.Fprintf(c, "POST /v1/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100\r\n\r\n{", tok)
	}
	hc := e.rawClient(false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, retry, body := e.do(hc, "GET", "/v1/objects", "Bearer "+tok, nil)
		if code == http.StatusTooManyRequests {
			if retry != "1" || !strings.Contains(body, "too many requests in flight for token:admin") {
				t.Fatalf("429 with Retry-After %q: %s", retry, body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("two requests held, the third still answered %d", code)
		}
		time.Sleep(20 * time.Millisecond) // polling the condition, bounded by deadline
	}
	if _, err := auditor.Objects(ctx(t), ""); err != nil {
		t.Fatalf("another token: %v", err)
	}
}

// Under a flood from loopback — one auditor token opening watch streams
// and hammering a list, and clients without credentials sending join
// bodies slowly — a legitimate client is still answered quickly. The
// flood is bounded in time and count; the test reports the p99 with and
// without it (docs/benchmarks.md).
func TestFloodKeepsALegitimateClientFast(t *testing.T) {
	e := start(t)
	tok, err := e.admin.CreateToken(ctx(t), "flood", api.RoleAuditor)
	if err != nil {
		t.Fatal(err)
	}
	legit := e.rawClient(true)
	// measure asks until done or n answers, one request at a time.
	measure := func(done <-chan struct{}, n int) (p50, p99 time.Duration, count int) {
		var lat []time.Duration
		for len(lat) < n {
			select {
			case <-done:
				n = 0
				continue
			default:
			}
			start := time.Now()
			if code, _, body := e.do(legit, "GET", "/v1/hosts", "Bearer "+e.m.AdminToken(), nil); code != http.StatusOK {
				t.Fatalf("the legitimate client: %d %s", code, body)
			}
			lat = append(lat, time.Since(start))
		}
		slices.Sort(lat)
		return lat[len(lat)/2], lat[len(lat)*99/100], len(lat)
	}
	quietP50, quietP99, _ := measure(nil, 1000)

	floodCtx, stop := context.WithTimeout(context.Background(), 3*time.Second)
	defer stop()
	var wg sync.WaitGroup
	var accepted, refused atomic.Int64
	flooder := e.rawClient(true)
	flooder.Timeout = 0
	for range 100 { // 100 × at most 200 watch streams asked for on one token
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200 && floodCtx.Err() == nil; i++ {
				req, _ := http.NewRequestWithContext(floodCtx, "GET", e.m.URL()+"/v1/watch", nil)
				req.Header.Set("Authorization", "Bearer "+tok.Secret)
				resp, err := flooder.Do(req)
				if err != nil {
					continue
				}
				if resp.StatusCode == http.StatusOK {
					accepted.Add(1)
					defer resp.Body.Close() // held open until the flood ends
					continue
				}
				refused.Add(1)
				resp.Body.Close()
			}
			<-floodCtx.Done()
		}()
	}
	for range 32 { // requests as fast as they are answered
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000 && floodCtx.Err() == nil; i++ {
				req, _ := http.NewRequestWithContext(floodCtx, "GET", e.m.URL()+"/v1/revisions", nil)
				req.Header.Set("Authorization", "Bearer "+tok.Secret)
				if resp, err := flooder.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	for range 64 { // slow join bodies, without credentials
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := e.tryDialTLS()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "POST /v1/join HTTP/1.1\r\nHost: x\r\nContent-Length: 16000\r\n\r\n{\"token\":")
			for i := 0; i < 100 && floodCtx.Err() == nil; i++ {
				if _, err := c.Write([]byte(" ")); err != nil {
					return
				}
				select {
				case <-floodCtx.Done():
				case <-time.After(50 * time.Millisecond): // the attacker's pace, not synchronisation
				}
			}
		}()
	}
	floodP50, floodP99, n := measure(floodCtx.Done(), 100_000)
	stop()
	wg.Wait()
	t.Logf("legitimate GET /v1/hosts: quiet (1000 requests) p50 %s p99 %s; under the flood (%d requests) p50 %s p99 %s (%.1f× the quiet p99); watch streams accepted %d, refused %d",
		quietP50, quietP99, n, floodP50, floodP99, float64(floodP99)/float64(quietP99), accepted.Load(), refused.Load())
	if accepted.Load() > 4 {
		t.Errorf("one token held %d watch streams; the limit is 4", accepted.Load())
	}
	// The goal is 100 ms; the bound is looser for a shared, noisy machine.
	if floodP99 > time.Second {
		t.Errorf("p99 under the flood is %s", floodP99)
	}
}

// A YAML scalar is read as the type its field has, never through a
// generic decode: `.inf` in a label is the text ".inf", refused by the
// label rules for what it is (not as a problem with mapping keys), and a
// key written 1 is the label key "1", as kubectl reads it.
func TestApplyReadsScalarsAsTheirFields(t *testing.T) {
	e := start(t)
	for _, v := range []string{".inf", "-.Inf", ".nan"} {
		data := "apiVersion: bulkhead.dev/v1\nkind: Namespace\nmetadata:\n  name: trading\n  labels:\n    desk: " + v + "\n"
		_, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("request", data), DryRun: true})
		wantStatus(t, err, http.StatusUnprocessableEntity, `metadata.labels.desk: invalid label value "`+v+`"`)
		if strings.Contains(err.Error(), "mapping key") {
			t.Errorf("%s: %v", v, err)
		}
	}
	data := "apiVersion: bulkhead.dev/v1\nkind: Namespace\nmetadata:\n  name: trading\n  labels:\n    1: a\n"
	if _, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("request", data), DryRun: true}); err != nil {
		t.Fatal(err)
	}
}

// A dry run that answers 200 means that the apply succeeds: an object
// too large for the store, or a message too large for a revision, is
// refused by both alike, and the refused apply leaves no blob behind.
func TestDryRunAppliesTheSizeLimits(t *testing.T) {
	e := start(t)
	blobs := func() int {
		kvs, _, err := e.st.List(ctx(t), "blobs/")
		if err != nil {
			t.Fatal(err)
		}
		return len(kvs)
	}
	big := "apiVersion: bulkhead.dev/v1\nkind: Namespace\nmetadata:\n  name: big\n  annotations:\n    note: " + strings.Repeat("x", 1700<<10) + "\n"
	small := "apiVersion: bulkhead.dev/v1\nkind: Namespace\nmetadata:\n  name: small\n"
	for _, dry := range []bool{true, false} {
		_, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("big.yaml", big), DryRun: dry})
		wantStatus(t, err, http.StatusRequestEntityTooLarge, "Namespace big")
	}
	before := blobs()
	for _, dry := range []bool{true, false} {
		_, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("small.yaml", small), DryRun: dry, Message: strings.Repeat("m", 2<<20)})
		wantStatus(t, err, http.StatusRequestEntityTooLarge, "message")
	}
	if after := blobs(); after != before {
		t.Fatalf("a refused apply left %d blobs behind", after-before)
	}
	res, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("small.yaml", small), DryRun: true, Message: strings.Repeat("m", 4096)})
	if err != nil {
		t.Fatal(err)
	}
	if res, err = e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: doc("small.yaml", small), Message: strings.Repeat("m", 4096)}); err != nil || res.Revision == 0 {
		t.Fatalf("the apply its dry run accepted: %+v %v", res, err)
	}
}
