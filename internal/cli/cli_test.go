package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

const (
	inv      = "../../examples/inventory.yaml"
	policies = "../../examples/policies"
)

func TestCheckExamplesHold(t *testing.T) {
	code, out, errs := run(t, "check", "-f", policies, "--inventory", inv)
	if code != 0 || !strings.Contains(out, `wall "buy-sell" holds`) {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
}

func TestCheckRefusesBreach(t *testing.T) {
	code, _, errs := run(t, "check", "-f", policies, "-f", "../../examples/breach.yaml", "--inventory", inv)
	if code != 1 || !strings.Contains(errs, "trading/buy-signal (10.10.1.10) (segment buy-side) -> trading/sell-db (10.10.2.20) (segment sell-side) tcp/5432 is allow") ||
		!strings.Contains(errs, "examples/breach.yaml:11:7") {
		t.Fatalf("exit %d\n%s", code, errs)
	}
}

func TestVerdictsContract(t *testing.T) {
	code, out, errs := run(t, "verdicts", "--inventory", inv, "--policy", policies, "--probes", "../../examples/probes.json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{"allow", "deny", "allow", "allow", "allow", "escalate", "escalate", "deny"}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i, l := range lines {
		var v struct {
			From, To, Protocol, Verdict string
			Port                        int
			Ingress                     struct{ Rule string }
		}
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatal(err)
		}
		if v.Verdict != want[i] || v.From == "" || v.Port == 0 || v.Protocol != "tcp" {
			t.Errorf("line %d: %s, want verdict %s", i, l, want[i])
		}
	}
}

func TestVerdictsBadProbeFails(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "p.json")
	os.WriteFile(p, []byte(`[{"from": "trading/nobody", "to": "10.0.0.1", "port": 80, "protocol": "tcp"}]`), 0o644)
	code, out, errs := run(t, "verdicts", "--inventory", inv, "--policy", policies, "--probes", p)
	if code == 0 || out != "" || !strings.Contains(errs, `probe 0: from: endpoint "trading/nobody": no such workload`) {
		t.Fatalf("exit %d, out %q, err %q", code, out, errs)
	}
	os.WriteFile(p, []byte(`[{"from": "10.0.0.1", "to": "10.0.0.2", "port": 80, "protocol": "gre"}]`), 0o644)
	if code, _, errs := run(t, "verdicts", "--policy", policies, "--probes", p); code == 0 || !strings.Contains(errs, `protocol "gre"`) {
		t.Fatalf("exit %d, err %q", code, errs)
	}
}

func TestExplainTextAndJSON(t *testing.T) {
	code, out, errs := run(t, "explain", "--inventory", inv, "-f", policies, "--from", "trading/buy-signal", "--to", "trading/sell-db", "--port", "5432/tcp")
	if code != 0 || !strings.Contains(out, "DENY") || !strings.Contains(out, `wall "buy-sell"`) {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = run(t, "explain", "--inventory", inv, "-f", policies, "--from", "payments/processor", "--to", "203.0.113.9", "--port", "443", "-o", "json")
	var r struct {
		Verdict string
		Egress  struct{ Rule, Tier string }
	}
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.Verdict != "escalate" || !strings.HasSuffix(r.Egress.Rule, "questionable-internet") {
		t.Fatalf("exit %d\n%s", code, out)
	}
}

func TestInputErrorsAreClear(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"check"}, "no policy given"},
		{[]string{"explain", "-f", policies, "--from", "a/b", "--to", "1.2.3.4", "--port", "99999/tcp"}, "want a number 1-65535"},
		{[]string{"explain", "-f", policies, "--from", "1.2.3.4", "--to", "1.2.3.5", "--port", "80/xyz"}, "unknown protocol"},
		{[]string{"check", "-f", "/nonexistent"}, "no such file"},
	} {
		code, _, errs := run(t, tc.args...)
		if code == 0 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: exit %d, %q; want %q", tc.args, code, errs, tc.want)
		}
	}
}
