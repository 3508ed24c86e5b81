package manager_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
)

// Under a flood from loopback — one auditor token asking for thousands
// of watch streams and hammering a list, and clients without credentials
// sending join bodies slowly — a legitimate client is still answered
// quickly. The flood runs in a child process (this test binary again),
// so that it takes CPU from the manager as a remote attacker's load
// would, not from the scheduler of the manager's own process; it is
// bounded in time and count. The test reports the p99 with and without
// it (docs/benchmarks.md).
func TestFloodKeepsALegitimateClientFast(t *testing.T) {
	if os.Getenv("BHHE_FLOOD_URL") != "" {
		t.Skip("the child's own run")
	}
	e := start(t)
	tok, err := e.admin.CreateToken(ctx(t), "flood", api.RoleAuditor)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, e.m.CAPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	legit := e.rawClient(true)
	// measure asks every 20 ms (a client well within its rate) until
	// done or n answers.
	measure := func(done <-chan struct{}, n int) (p50, p99 time.Duration, count int) {
		var lat []time.Duration
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for len(lat) < n {
			select {
			case <-done:
				n = 0
				continue
			case <-tick.C:
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
	quietP50, quietP99, _ := measure(nil, 100)

	cmd := exec.CommandContext(ctx(t), os.Args[0], "-test.run=^TestFloodChild$")
	cmd.Env = append(os.Environ(), "BHHE_FLOOD_URL="+e.m.URL(), "BHHE_FLOOD_CA="+caFile, "BHHE_FLOOD_TOKEN="+tok.Secret)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	for lines.Scan() && lines.Text() != "flooding" {
	}
	done := make(chan struct{})
	var report []string
	go func() {
		defer close(done)
		for lines.Scan() {
			report = append(report, lines.Text())
		}
		_ = cmd.Wait()
	}()
	floodP50, floodP99, n := measure(done, 100_000)
	<-done
	t.Logf("legitimate GET /v1/hosts every 20 ms: quiet (100 requests) p50 %s p99 %s; under the flood (%d requests) p50 %s p99 %s (%.1f× the quiet p99); the flood: %s",
		quietP50, quietP99, n, floodP50, floodP99, float64(floodP99)/float64(quietP99), strings.Join(report, "; "))
	accepted, refused := -1, 0
	for _, l := range report {
		_, _ = fmt.Sscanf(l, "watch streams accepted %d, refused %d", &accepted, &refused)
	}
	if accepted < 0 || refused == 0 {
		t.Fatalf("the flood's report: %q", report)
	}
	if accepted > 4 {
		t.Errorf("one token held %d watch streams; the limit is 4", accepted)
	}
	// The goal is 100 ms; the bound is looser for a shared machine that
	// other work loads (there a thread can wait for a CPU for a second).
	if floodP99 > 2*time.Second {
		t.Errorf("p99 under the flood is %s", floodP99)
	}
}

// TestFloodChild is the flood of TestFloodKeepsALegitimateClientFast,
// for 3 s.
func TestFloodChild(t *testing.T) {
	url, token := os.Getenv("BHHE_FLOOD_URL"), os.Getenv("BHHE_FLOOD_TOKEN")
	if url == "" {
		t.Skip("run by TestFloodKeepsALegitimateClientFast")
	}
	caPEM, err := os.ReadFile(os.Getenv("BHHE_FLOOD_CA"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}}
	floodCtx, stop := context.WithTimeout(context.Background(), 3*time.Second)
	defer stop()
	var wg sync.WaitGroup
	var accepted, refused, requests atomic.Int64
	get := func(path string) *http.Response {
		req, _ := http.NewRequestWithContext(floodCtx, "GET", url+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return nil
		}
		requests.Add(1)
		return resp
	}
	for range 100 { // 100 × at most 200 watch streams asked for on one token
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200 && floodCtx.Err() == nil; i++ {
				resp := get("/v1/watch")
				switch {
				case resp == nil:
				case resp.StatusCode == http.StatusOK:
					accepted.Add(1)
					defer resp.Body.Close() // held open until the flood ends
				default:
					refused.Add(1)
					resp.Body.Close()
				}
			}
			<-floodCtx.Done()
		}()
	}
	for range 32 { // requests as fast as they are answered
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20_000 && floodCtx.Err() == nil; i++ {
				if resp := get("/v1/revisions"); resp != nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	host := strings.TrimPrefix(url, "https://")
	for range 64 { // slow join bodies, without credentials
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", host,
				&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
			if err != nil {
				return
			}
			defer c.Close()
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
	fmt.Println("flooding")
	wg.Wait()
	fmt.Printf("%d requests answered\nwatch streams accepted %d, refused %d\n", requests.Load(), accepted.Load(), refused.Load())
}
