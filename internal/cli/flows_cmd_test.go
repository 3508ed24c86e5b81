package cli

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/flows"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
)

func TestFlowsCommand(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(configEnv, filepath.Join(dir, "config.yaml"))
	t.Setenv(serverEnv, "")
	t.Setenv(tokenEnv, "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		runManagerCLI(ctx, "manager", "--data-dir", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0")
	}()
	t.Cleanup(func() { cancel(); <-done })
	data := filepath.Join(dir, "data")
	url := waitURL(t, data)
	run := func(want int, args ...string) string {
		t.Helper()
		c, cctx := context.WithTimeout(context.Background(), 20*time.Second)
		defer cctx()
		code, out, errs := runManagerCLI(c, args...)
		if code != want {
			t.Fatalf("bulkhead %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out, errs)
		}
		return out + errs
	}
	run(0, "login", "--server", url, "--ca", filepath.Join(data, "ca.crt"), "--token-file", filepath.Join(data, "admin.token"))
	out := run(0, "token", "create", "--join", "--host", "node-1")
	secret := regexp.MustCompile(`bhj_\S+`).FindString(out)
	caHash := regexp.MustCompile(`sha256:[0-9a-f]+`).FindString(out)
	ca, err := os.ReadFile(filepath.Join(data, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	creds, err := client.Join(context.Background(), url, ca, caHash, secret, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	agent, err := creds.Client(url)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ep := func(w string, a string, port uint16) flows.Endpoint {
		return flows.Endpoint{Addr: netip.MustParseAddr(a), Port: port, Workload: w, Namespace: "app"}
	}
	b := &flows.Batch{Stream: "s", Seq: 1, Records: []flows.Record{
		{End: now, Src: ep("web", "10.0.0.1", 40000), Dst: ep("db", "10.0.0.2", 5432), Proto: 6, Verdict: flows.Allow, Rule: "Policy/app/db/ingress/web"},
		{End: now, Src: ep("x", "10.0.0.3", 40001), Dst: ep("db", "10.0.0.2", 5432), Proto: 6, Verdict: flows.Deny, Rule: "Policy/app/db/ingress/deny"},
	}, Lost: map[flows.Cause]uint64{flows.LostNFLOGGap: 4}}
	if err := (client.FlowSink{Client: agent}).Send(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	out = run(0, "flows", "--workload", "db", "--since", "1h")
	if !strings.Contains(out, "app/web (10.0.0.1)") || !strings.Contains(out, "app/db (10.0.0.2):5432") ||
		!strings.Contains(out, "Policy/app/db/ingress/deny") || !strings.Contains(out, "node-1") {
		t.Fatalf("flows: %s", out)
	}
	out = run(0, "flows", "--verdict", "deny", "-o", "json")
	var list api.FlowList
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Flows) != 1 || list.Flows[0].Src.Workload != "x" {
		t.Fatalf("flows -o json: %v\n%s", err, out)
	}
	out = run(0, "flows", "counts")
	if !strings.Contains(out, "stored 2 flows") || !strings.Contains(out, "lost on node-1: 4 nflog-gap") {
		t.Fatalf("flows counts: %s", out)
	}
	scan := &flows.Batch{Stream: "s", Seq: 2}
	for p := range 20 {
		scan.Records = append(scan.Records, flows.Record{End: now, Src: ep("x", "10.0.0.3", 40001), Dst: ep("db", "10.0.0.2", uint16(1000+p)),
			Proto: 6, Verdict: flows.Deny, Rule: "Policy/app/db/ingress/deny"})
	}
	if err := (client.FlowSink{Client: agent}).Send(context.Background(), scan); err != nil {
		t.Fatal(err)
	}
	out = run(0, "alerts")
	if !strings.Contains(out, "scan") || !strings.Contains(out, "app/x: 20 distinct denied destinations") {
		t.Fatalf("alerts: %s", out)
	}
	out = run(1, "flows", "--since", "1h", "--from", now.Format(time.RFC3339))
	if !strings.Contains(out, "not both") {
		t.Fatalf("flows --since --from: %s", out)
	}
}
