package testenv

import (
	"testing"
	"time"
)

// WaitFor polls cond every 10 ms until it holds, and fails t naming what it
// waited for once timeout has passed. Tests wait on a condition this way
// instead of sleeping for a time that is usually enough.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
