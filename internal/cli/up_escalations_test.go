package cli

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// `bulkhead up --demo` shows questionable connections decided on the
// manager: one by a condition, the payment processor's first access to a
// dataset by binding it (nobody is asked), and its attempt at the other
// dataset denied by that binding; `bulkhead escalations` lists them.
func TestUpDemoEscalations(t *testing.T) {
	nstest.RequireRoot(t)
	const demoPrefix = "bhewd-"
	// The demo's namespaces have fixed names under the prefix: those of
	// an earlier run that died go first.
	if err := netns.DeleteAll(demoPrefix); err != nil {
		t.Fatal(err)
	}
	host := nstest.NS(t, "bhewt")
	dir := t.TempDir()
	t.Setenv(configEnv, filepath.Join(dir, "config.yaml"))
	t.Setenv(serverEnv, "")
	t.Setenv(tokenEnv, "")
	t.Setenv(agentEnv, "")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- runWith(ctx, []string{"up", "--demo", "--netns", host.Path(), "--data-dir", filepath.Join(dir, "data"),
			"--listen", "127.0.0.1:0", "--socket", filepath.Join(dir, "agent.sock"), "--host", "bhew-test",
			"--demo-prefix", demoPrefix, "--demo-every", "1s", "--demo-subnet", "10.215.0.0/24"}, nil, &out, &errb)
	}()
	for end := time.Now().Add(45 * time.Second); !strings.Contains(out.String(), "Connections as the demo's clients try them"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("up is not ready:\n%s%s", out.String(), errb.String())
		}
	}
	byCondition := regexp.MustCompile(`allowed\s+trading/report\s+→ trading/buy-db:5432 .*\[manager: [0-9a-f]{12} allow: rule reports-within-rate`)
	bound := regexp.MustCompile(`allowed\s+payments/payment-processor\s+→ payments/cards-db:5432 .*\[manager: [0-9a-f]{12} allow: first access; payments/payment-processor bound to dataset cards of conflict class payment-datasets`)
	byBinding := regexp.MustCompile(`denied\s+payments/payment-processor\s+→ payments/ledger-db:5432 .*\[manager: [0-9a-f]{12} deny: payments/payment-processor bound to dataset cards of conflict class payment-datasets`)
	waitFor(t, 20*time.Second, "a connection decided by a condition, a first access bound and the other dataset denied by the binding:\n"+out.String(), func() bool {
		s := out.String()
		return byCondition.MatchString(s) && bound.MatchString(s) && byBinding.MatchString(s)
	})
	if regexp.MustCompile(`held\s+payments/payment-processor`).MatchString(out.String()) {
		t.Errorf("a first access to the conflict class was held, not decided:\n%s", out.String())
	}

	// The sell-side database is read only when an operator approves: the
	// demo says which command answers, and the connection goes through.
	held := regexp.MustCompile(`held\s+trading/report\s+→ trading/sell-db:5432\s+waiting for an operator: bulkhead escalations approve ([0-9a-f]{12})`)
	var id string
	waitFor(t, 20*time.Second, "report -> sell-db held for an operator:\n"+out.String(), func() bool {
		m := held.FindStringSubmatch(out.String())
		if m != nil {
			id = m[1]
		}
		return m != nil
	})
	var aout, aerr bytes.Buffer
	if code := runWith(context.Background(), []string{"escalations", "approve", id}, nil, &aout, &aerr); code != 0 {
		t.Fatalf("escalations approve %s: exit %d:\n%s%s", id, code, aout.String(), aerr.String())
	}
	approved := regexp.MustCompile(`allowed\s+trading/report\s+→ trading/sell-db:5432 .*\[manager: ` + id + ` allow: approved by`)
	waitFor(t, 20*time.Second, "report -> sell-db connected once approved:\n"+out.String(), func() bool {
		return approved.MatchString(out.String())
	})

	// Another terminal: the configuration up wrote names the manager.
	var lout, lerr bytes.Buffer
	if code := runWith(context.Background(), []string{"escalations"}, nil, &lout, &lerr); code != 0 || !strings.Contains(lout.String(), "rule reports-within-rate") {
		t.Errorf("escalations: exit %d:\n%s%s", code, lout.String(), lerr.String())
	}
	if strings.Contains(out.String(), "UNEXPECTED") {
		t.Errorf("a demo connection went against the policy:\n%s", out.String())
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("up exited %d: %s", code, errb.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("up did not stop")
	}
	if testing.Verbose() {
		t.Logf("output of up:\n%s", out.String())
	}
}
