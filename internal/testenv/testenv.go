// Package testenv holds the checks tests make of the machine they run on.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Missing ends t for want of what the machine lacks: it skips t on a
// developer's machine, and fails it when the CI environment variable is
// set, because CI runs as root with `make deps` done, where a skip would
// hide a test that never ran.
func Missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal("CI is set but " + what)
	}
	t.Skip(what)
}

// RequireRoot ends t (see Missing) unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "this test needs root (eBPF, containers)")
	}
}

// RequireCommand returns the path of the command name, or ends t (see
// Missing) when it is not installed; hint says how to install it.
func RequireCommand(t testing.TB, name, hint string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, fmt.Sprintf("%s is not installed (%s)", name, hint))
	}
	return p
}
