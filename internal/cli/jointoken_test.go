package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A join token comes from a file or the environment, which ps does not
// show; on the command line it still works, with a warning; never two.
func TestJoinTokenSources(t *testing.T) {
	file := filepath.Join(t.TempDir(), "join.token")
	if err := os.WriteFile(file, []byte("bhj_fromfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mf   managedFlags
		env  string
		want string
		warn bool
		err  string
	}{
		{name: "file", mf: managedFlags{joinTokenFile: file}, want: "bhj_fromfile"},
		{name: "environment", env: "bhj_fromenv", want: "bhj_fromenv"},
		{name: "flag", mf: managedFlags{joinToken: "bhj_flag"}, want: "bhj_flag", warn: true},
		{name: "none"},
		{name: "two", mf: managedFlags{joinTokenFile: file}, env: "bhj_fromenv", err: "give the join token once"},
		{name: "missing file", mf: managedFlags{joinTokenFile: file + ".nope"}, err: "--join-token-file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(joinTokenEnv, tc.env)
			var warn bytes.Buffer
			got, err := tc.mf.token(&warn)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want || (warn.Len() > 0) != tc.warn {
				t.Fatalf("got %q, %v, warning %q", got, err, warn.String())
			}
		})
	}
}
