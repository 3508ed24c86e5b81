package seal_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/manager/seal"
)

type record struct {
	Name string `json:"name"`
	Seal string `json:"seal,omitempty"`
}

func (r *record) SealField() *string { return &r.Seal }

func TestSealChecksKeyAndContent(t *testing.T) {
	k := seal.Derive(bytes.Repeat([]byte{1}, 32))
	value := k.Seal("auth/tokens/x", &record{Name: "alice"})
	var got record
	if err := json.Unmarshal(value, &got); err != nil || got.Seal == "" {
		t.Fatalf("sealed value %s: %v", value, err)
	}
	if err := k.Check("auth/tokens/x", &got); err != nil {
		t.Fatalf("its own seal: %v", err)
	}
	var tampered *seal.TamperedError
	for name, c := range map[string]struct {
		key string
		rec record
		by  *seal.Key
	}{
		"changed content": {"auth/tokens/x", record{Name: "mallory", Seal: got.Seal}, k},
		"moved to a key":  {"auth/tokens/y", got, k},
		"another key":     {"auth/tokens/x", got, seal.Derive(bytes.Repeat([]byte{2}, 32))},
		"no seal":         {"auth/tokens/x", record{Name: "alice"}, k},
	} {
		err := c.by.Check(c.key, &c.rec)
		if !errors.As(err, &tampered) || tampered.Key != c.key {
			t.Errorf("%s: Check = %v, want a TamperedError for %s", name, err, c.key)
		}
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, seal.KeyFile)
	if k, err := seal.ReadFile(path); k != nil || err != nil {
		t.Fatalf("ReadFile of no file = %v, %v; want nil, nil", k, err)
	}
	k, err := seal.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	again, err := seal.ReadFile(path)
	if err != nil || again.ID() != k.ID() || !again.AuditPublic().Equal(k.AuditPublic()) {
		t.Fatalf("read back: %v; id %s, want %s", err, again.ID(), k.ID())
	}
	if strings.Contains(string(k.Record()), k.ID()) == false {
		t.Errorf("the key record %s does not name the key's id", k.Record())
	}
	var rec seal.Record
	if err := json.Unmarshal(k.Record(), &rec); err != nil || again.Check(seal.StoreKey, &rec) != nil {
		t.Errorf("the key record does not verify under the key: %v", err)
	}
	if err := os.WriteFile(path, []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := seal.ReadFile(path); err == nil || !strings.Contains(err.Error(), "want 64 hex digits") {
		t.Errorf("ReadFile of a bad file = %v, want one that says what is valid", err)
	}
}
