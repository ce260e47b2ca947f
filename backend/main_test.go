package backend

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// store, server and client a test starts must be stopped by it.
func TestMain(m *testing.M) {
	if spec := os.Getenv(killChildEnv); spec != "" {
		os.Exit(runKillChild(spec))
	}
	goleak.VerifyTestMain(m)
}
