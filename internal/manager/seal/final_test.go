package seal_test

import (
	"path/filepath"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/manager/seal"
)

// A one-way state, once seen, holds: a record that comes back without it
// was rolled back. The states outlive the manager in their file.
func TestFinalHoldsOneWayStates(t *testing.T) {
	var f seal.Final // the zero value is an empty set
	if f.Revoked("01", false) || f.Used("auth/join/a", false) {
		t.Fatal("an empty set holds something")
	}
	if f.Revoked("01", true) || f.Used("auth/join/a", true) {
		t.Fatal("reaching a state is not a rollback")
	}
	if !f.Revoked("01", false) || !f.Used("auth/join/a", false) {
		t.Fatal("a record put back as before its revocation or use is not held")
	}
	if f.Revoked("02", false) || f.Used("auth/join/b", false) {
		t.Fatal("another record is held")
	}
	path := filepath.Join(t.TempDir(), seal.FinalFile)
	if err := f.Save(path); err != nil {
		t.Fatal(err)
	}
	var g seal.Final
	if err := g.Load(path); err != nil {
		t.Fatal(err)
	}
	if !g.Revoked("01", false) || !g.Used("auth/join/a", false) || g.Revoked("02", false) {
		t.Fatal("the states read back are not the states saved")
	}
	var h seal.Final
	if err := h.Load(filepath.Join(t.TempDir(), "none")); err != nil || h.Revoked("01", false) {
		t.Fatalf("Load of no file: %v; want an empty set", err)
	}
}
