package testenv

import (
	"syscall"
	"testing"
	"time"
)

// CPUTime is the process's user and system CPU time so far. Benchmarks
// report CPU per operation beside wall time: on a machine shared with other
// jobs the wall time includes waiting for a core, the CPU time does not.
func CPUTime(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
