package cli

import (
	"bytes"
	"regexp"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
)

// certificate list shows each renewal chain as a tree.
func TestCertificateListShowsRenewalChains(t *testing.T) {
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	revoked := at.Add(time.Hour)
	certs := []api.Certificate{
		{Serial: "aa", Host: "node-1", Issued: at, NotAfter: at, Revoked: &revoked, RevokedBy: "token:admin (admin)"},
		{Serial: "cc", Host: "node-1", Issued: at, NotAfter: at, RenewedFrom: "bb"},
		{Serial: "bb", Host: "node-1", Issued: at, NotAfter: at, RenewedFrom: "aa"},
		{Serial: "dd", Host: "node-2", Issued: at, NotAfter: at},
	}
	var out bytes.Buffer
	if err := printCertificates(&out, certs); err != nil {
		t.Fatal(err)
	}
	want := `(?s)node-1\s+aa\s+join\s+\S+\s+\S+\s+2026-12-01T01:00:00Z by token:admin \(admin\)\n` +
		`node-1\s+  bb\s+renewed aa\s.*\n` +
		`node-1\s+    cc\s+renewed bb\s.*\n` +
		`node-2\s+dd\s+join\s`
	if !regexp.MustCompile(want).MatchString(out.String()) {
		t.Fatalf("certificate list:\n%s", out.String())
	}
}
