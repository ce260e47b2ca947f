// Package testenv holds the checks tests make of the machine they run on.
package testenv

import (
	"os"
	"testing"
)

// RequireRoot skips t when not running as root, and fails it instead when
// the CI environment variable is set: CI runs as root, so a skip there would
// hide tests that never ran.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("this test needs root; CI runs as root")
	}
	t.Skip("needs root (eBPF, containers)")
}
