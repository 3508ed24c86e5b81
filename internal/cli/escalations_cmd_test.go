package cli

import (
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

// bulkhead escalations lists, follows and approves what an agent asked.
func TestEscalationsCommands(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(configEnv, filepath.Join(dir, "config.yaml"))
	t.Setenv(serverEnv, "")
	t.Setenv(tokenEnv, "")
	st, err := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := manager.Start(ctx, manager.Config{Store: st, DataDir: dir, Listen: "127.0.0.1:0", Heartbeat: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	admin, err := client.New(client.Config{URL: m.URL(), CA: m.CAPEM(), Token: m.AdminToken()})
	if err != nil {
		t.Fatal(err)
	}
	rule := "apiVersion: bulkhead.dev/v1\nkind: DecisionRule\nmetadata: {name: ask}\nspec: {order: 1, outcome: hold, holdTimeout: 1m}\n"
	if _, err := admin.Apply(ctx, api.ManagerApplyRequest{Documents: []api.Document{{Name: "r.yaml", Data: rule}}}); err != nil {
		t.Fatal(err)
	}
	jt, err := admin.CreateJoinToken(ctx, "node-1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := client.Join(ctx, m.URL(), nil, jt.CAHash, jt.Secret, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	agentClient, err := creds.Client(m.URL())
	if err != nil {
		t.Fatal(err)
	}
	// The manager vouches for the ends from what the host reported.
	if _, err := agentClient.ReportWorkloads(ctx, "node-1", []api.HostWorkload{{Host: "node-1", Namespace: "shop", Name: "web", IPs: []string{"10.0.0.1"}},
		{Host: "node-1", Namespace: "shop", Name: "db", IPs: []string{"10.0.0.2"}}}, nil, true); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if l, err := admin.Workloads(ctx, "node-1"); err == nil && len(l.Items) == 2 {
			break
		} else if i == 200 {
			t.Fatalf("the manager does not list the workloads: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	decided := make(chan api.EscalationDecision, 1)
	go func() {
		d, _ := agentClient.Escalate(ctx, api.EscalationRequest{Protocol: "tcp", Port: 5432, Deadline: time.Now().Add(20 * time.Second),
			Source:      api.EscalationEndpoint{Address: "10.0.0.1", Namespace: "shop", Name: "web"},
			Destination: api.EscalationEndpoint{Address: "10.0.0.2", Namespace: "shop", Name: "db"},
			Rules:       []api.EscalationRuleRef{{Namespace: "shop", Policy: "db", Rule: "ask"}}})
		decided <- d
	}()
	flags := []string{"--server", m.URL(), "--ca", filepath.Join(dir, manager.CAFile), "--token", m.AdminToken()}
	run := func(c context.Context, want int, args ...string) string {
		t.Helper()
		code, out, errs := runManagerCLI(c, append(args, flags...)...)
		if code != want {
			t.Fatalf("bulkhead %s: exit %d, want %d\n%s%s", strings.Join(args, " "), code, want, out, errs)
		}
		return out + errs
	}
	var out string
	for range 100 {
		if out = run(ctx, 0, "escalations", "--state", "held"); strings.Contains(out, "shop/web") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(out, "shop/db/ask") || !strings.Contains(out, "waiting for an operator") {
		t.Fatalf("escalations: %s", out)
	}
	id := regexp.MustCompile(`(?m)^([0-9a-f]{12}) `).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("no id in %s", out)
	}
	var list api.EscalationList
	if err := json.Unmarshal([]byte(run(ctx, 0, "escalations", "-o", "json")), &list); err != nil || len(list.Items) != 1 {
		t.Fatalf("-o json: %+v %v", list, err)
	}
	if out := run(ctx, 0, "escalations", "approve", id[1], "--reason", "known"); !strings.Contains(out, "allow") {
		t.Fatalf("approve: %s", out)
	}
	if d := <-decided; d.Verdict != api.VerdictAllow {
		t.Fatalf("the agent got %+v", d)
	}
	if out := run(ctx, 1, "escalations", "deny", id[1]); !strings.Contains(out, "decided already") {
		t.Fatalf("deny after approve: %s", out)
	}
	fctx, fcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer fcancel()
	code, fout, ferr := runManagerCLI(fctx, append([]string{"escalations", "--follow"}, flags...)...)
	if !strings.Contains(fout, "allow by token:admin (admin)") {
		t.Fatalf("follow: exit %d: %s%s", code, fout, ferr)
	}
}
