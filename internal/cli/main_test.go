package cli

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain keeps the tests away from the machine's own CLI configuration
// (a `bulkhead up` run by hand writes ~/.config/bulkhead/config.yaml, and
// commands then go to that manager): every test starts with none.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bulkhead-cli-test")
	if err != nil {
		panic(err)
	}
	os.Setenv(configEnv, filepath.Join(dir, "config.yaml"))
	for _, k := range []string{serverEnv, tokenEnv, agentEnv} {
		os.Unsetenv(k)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
