// Package datadir writes what a manager keeps in its data directory,
// outside the store: the CA certificate for clients, the first admin
// token, the URL it serves, the manager key (internal/manager/seal), its
// signed audit head (internal/manager/auditlog) and the final states of
// access records. A file is replaced whole or not at all, so that a crash
// never leaves half of a secret or an anchor.
package datadir

import (
	"fmt"
	"os"
)

// WriteFile writes data to path with mode, through a temporary file
// renamed over it.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("manager: write %s: %w", path, err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fmt.Errorf("manager: chmod %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("manager: write %s: %w", path, err)
	}
	return nil
}
