package testenv

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// BuiltTool runs tests/<tool>/build.sh, which builds a test tool from the
// Go module proxy once and keeps it in the test cache, and returns the
// path it prints.
func BuiltTool(t testing.TB, tool string) string {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(self), "..", "..", "tests", tool, "build.sh")
	cmd := exec.Command("bash", script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("build %s (%s): %v\n%s", tool, script, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}
