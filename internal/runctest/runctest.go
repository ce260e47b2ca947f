// Package runctest starts real OCI containers with runc for integration
// tests of the sensor. The runc plumbing lives in internal/ocirun, which
// the attack simulation shares; this package ties it to testing.TB: a
// private temporary directory per container and teardown in t.Cleanup.
//
// Every container gets a busybox-static root filesystem mounted as an
// overlayfs (see internal/ocirun) and runs in fresh pid, mount, ipc, uts
// and network namespaces, in the cgroup "/harrier/<ID>".
//
// [Require] skips the test when containers cannot run here (or fails it
// when the CI environment variable is set).
package runctest

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/harrier-sec/harrier/internal/ocirun"
	"github.com/harrier-sec/harrier/internal/testenv"
)

const (
	// BusyboxPath is the statically linked busybox copied into every
	// container as /bin/busybox.
	BusyboxPath = ocirun.BusyboxPath

	// CgroupParent is the cgroup (relative to each hierarchy's root) under
	// which every container gets its own cgroup named after its ID.
	CgroupParent = ocirun.CgroupParent

	// IDPrefix starts every container ID.
	IDPrefix = "harrier-test-"

	// DefaultTimeout bounds [Run] when Options.Timeout is zero.
	DefaultTimeout = ocirun.DefaultTimeout
)

// Options, File and Container are ocirun's.
type (
	Options   = ocirun.Options
	File      = ocirun.File
	Container = ocirun.Container
)

// Available reports nil when containers can be started here, or an error
// naming everything that is missing.
func Available() error { return ocirun.Available() }

// Require skips the test when Available reports an error, or fails it when
// the CI environment variable is set, where the helpers must work.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		testenv.Missing(t, "containers cannot run: "+err.Error())
	}
}

// Start starts a detached container running opts.Args (default
// "sleep 3600") and registers its teardown with t.Cleanup. It fails the
// test if the container cannot be started.
func Start(t testing.TB, opts Options) *Container {
	t.Helper()
	if len(opts.Args) == 0 {
		opts.Args = []string{"sleep", "3600"}
	}
	c, err := create(t, opts)
	if err != nil {
		t.Fatalf("runctest: %v", err)
	}
	if err := c.Start(); err != nil {
		t.Fatalf("runctest: %v", err)
	}
	return c
}

// Run runs a container in the foreground until opts.Args exits or
// opts.Timeout passes, and returns its standard output. The error wraps
// *exec.ExitError when the process exits with a non-zero status and
// includes its standard error. Everything is torn down in t.Cleanup.
func Run(t testing.TB, opts Options) (string, error) {
	t.Helper()
	if len(opts.Args) == 0 {
		return "", errors.New("runctest: Run needs Options.Args")
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	c, err := create(t, opts)
	if err != nil {
		return "", fmt.Errorf("runctest: %w", err)
	}
	ctx, cancel := context.WithTimeoutCause(context.Background(), timeout,
		fmt.Errorf("%w after %v", context.DeadlineExceeded, timeout))
	defer cancel()
	out, err := c.Run(ctx)
	if err != nil {
		return out, fmt.Errorf("runctest: %w", err)
	}
	return out, nil
}

// create makes the container in a test temporary directory and registers
// its teardown; it does not start it.
func create(t testing.TB, opts Options) (*Container, error) {
	c, err := ocirun.Create(t.TempDir(), IDPrefix, opts)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if err := c.Teardown(); err != nil {
			t.Errorf("runctest: teardown of %s: %v", c.ID, err)
		}
	})
	return c, nil
}
