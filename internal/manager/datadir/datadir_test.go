package datadir_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/manager/datadir"
)

func TestWriteFileReplacesWholeWithItsMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte("old and longer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := datadir.WriteFile(path, []byte("new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	fi, _ := os.Stat(path)
	if err != nil || string(data) != "new\n" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("after WriteFile: %q %v, mode %v; want \"new\\n\", 0600", data, err, fi.Mode().Perm())
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("the temporary file is left: %v", err)
	}
	if err := datadir.WriteFile(filepath.Join(path, "under-a-file"), nil, 0o600); err == nil {
		t.Fatal("writing under a file did not fail")
	}
}
