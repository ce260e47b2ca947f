// Package confvaltest checks a config loader against a table of files, for
// the tests of every mode's LoadConfig.
package confvaltest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Case is one config file and what loading it must say.
type Case struct {
	Name string
	YAML string
	// Want is a substring of the error; empty means the file loads.
	Want string
}

// CheckLoad writes each case's YAML to a file and loads it with load: a
// case with Want must fail with an error naming the file and Want, the
// others must load.
func CheckLoad(t *testing.T, load func(path string) error, cases []Case) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(tc.YAML), 0o600); err != nil {
				t.Fatal(err)
			}
			err := load(path)
			switch {
			case tc.Want == "" && err != nil:
				t.Errorf("load: %v", err)
			case tc.Want != "" && (err == nil || !strings.Contains(err.Error(), tc.Want) || !strings.Contains(err.Error(), path)):
				t.Errorf("load = %v, want an error naming %s and %q", err, path, tc.Want)
			}
		})
	}
}
