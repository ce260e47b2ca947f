// Package ocirun starts real OCI containers with runc: the plumbing that
// the sensor's integration tests (internal/runctest) and the attack
// simulation (simulate) share.
//
// Every container gets a busybox-static root filesystem assembled in the
// test's temporary directory and mounted as an overlayfs: the lower layer
// holds /bin/busybox and its applet symlinks, and everything written from
// inside the container (or through [Container.CopyIn]) lands in the upper
// layer, exactly as with a container engine. The container runs in fresh
// pid, mount, ipc, uts and network namespaces, in the cgroup
// "/harrier/<ID>".
//
// The helpers need root, runc, a statically linked /bin/busybox and
// overlayfs; [Available] reports what is missing.
package ocirun

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// BusyboxPath is the statically linked busybox copied into every
	// container as /bin/busybox.
	BusyboxPath = "/bin/busybox"

	// CgroupParent is the cgroup (relative to each hierarchy's root) under
	// which every container gets its own cgroup named after its ID.
	CgroupParent = "/harrier"

	// DefaultTimeout bounds a foreground run when Options.Timeout is zero.
	DefaultTimeout = 20 * time.Second

	// cmdTimeout bounds the runc calls made during setup and cleanup.
	cmdTimeout = 30 * time.Second
)

// applets are the busybox applets linked into /bin of every rootfs.
func applets() []string {
	return []string{
		"[", "awk", "base64", "basename", "cat", "chmod", "chown", "cp", "cut",
		"date", "dd", "dirname", "echo", "env", "false", "find", "grep", "head",
		"hostname", "id", "ifconfig", "ip", "kill", "ln", "ls", "md5sum",
		"mkdir", "mkfifo", "mktemp", "mv", "nc", "netstat", "nohup", "nslookup",
		"ping", "printf", "ps", "pwd", "readlink", "realpath", "rm", "rmdir",
		"sed", "seq", "setsid", "sh", "sha256sum", "sleep", "sort", "stat",
		"tail", "tar", "tee", "test", "timeout", "touch", "tr", "true", "uname",
		"uniq", "wc", "wget", "which", "whoami", "xargs",
	}
}

// Options describe the container to start.
type Options struct {
	// Args is the container's process. Start defaults to "sleep 3600";
	// Run requires it.
	Args []string
	// Env is appended to the default PATH and HOME.
	Env []string
	// UID and GID run the process as that user; zero means root.
	UID, GID uint32
	// Home is $HOME; default /root for root and /home/user otherwise.
	Home string
	// Timeout bounds a foreground run by helpers that take no context
	// (internal/runctest's Run); zero means DefaultTimeout.
	Timeout time.Duration
	// Applets are busybox applets linked into /bin in addition to the
	// default set (for example "httpd" or "unshare").
	Applets []string
	// Image adds files to the read-only lower layer, as if they were part
	// of the container's image: container path → file. Their parent
	// directories are created.
	Image map[string]File
	// Layers are read-only directories stacked under the busybox layer,
	// topmost first, as further image layers (for example a tree of Debian
	// packages unpacked with dpkg -x). They are shared, never written:
	// the container's writes go to its own upper layer. Paths must not
	// contain ':' or ','.
	Layers []string
	// Mounts are bind mounts of host files or directories into the
	// container (for example a service-account token).
	Mounts []Bind
	// Annotations go into config.json, as a CRI runtime's would.
	Annotations map[string]string
	// Privileged gives the process every capability (as docker --privileged
	// and a Kubernetes privileged container do) instead of the default 14.
	Privileged bool
	// Systemd prepares the container for systemd as its process (Args):
	// its own cgroup namespace with the cgroup2 tree mounted writable (a
	// delegated subtree, where systemd makes its slices and services),
	// /run, /run/lock and /tmp as tmpfs, and container=oci in the
	// environment, as podman does for an image whose command is systemd.
	// It implies Privileged.
	Systemd bool
}

// Bind is a bind mount of the host path Source at Destination.
type Bind struct {
	Source, Destination string
	ReadOnly            bool
}

// File is a file of the image: a copy of the host file Host, or Content.
type File struct {
	Host    string
	Content string
	// Mode defaults to 0755 for a host file and 0644 for Content.
	Mode os.FileMode
	// UID and GID own the file (default root).
	UID, GID int
}

// Container is one runc container and the files that make it.
type Container struct {
	// ID is the runc container ID, the caller's prefix and random hex.
	ID string
	// Bundle is the OCI bundle directory holding config.json, and the
	// stdout and stderr logs of a container started with Start.
	Bundle string
	// Rootfs is the merged overlay mount, the container's "/".
	Rootfs string
	// Lower is the read-only lower layer (busybox and /etc).
	Lower string
	// Upper is the overlay's upper layer: what the container wrote.
	Upper string

	runc      string
	stateRoot string
	layers    layers
}

// Create builds the bundle and root filesystem of a container in dir (which
// must exist and be private to it), mounts the overlay and writes
// config.json; it does not start the container. On success the caller must
// call [Container.Teardown].
func Create(dir, idPrefix string, opts Options) (*Container, error) {
	runc, err := runcPath()
	if err != nil {
		return nil, err
	}
	id, err := newID(idPrefix)
	if err != nil {
		return nil, err
	}
	l, err := newLayers(filepath.Join(dir, "rootfs"))
	if err != nil {
		return nil, fmt.Errorf("create layers: %w", err)
	}
	c := &Container{
		ID:        id,
		Bundle:    filepath.Join(dir, "bundle"),
		Rootfs:    l.merged,
		Lower:     l.lower,
		Upper:     l.upper,
		runc:      runc,
		stateRoot: filepath.Join(dir, "runc-state"),
		layers:    l,
	}
	for _, d := range []string{c.Bundle, c.stateRoot} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create bundle: %w", err)
		}
	}
	for _, dir := range opts.Layers {
		if strings.ContainsAny(dir, ":,") {
			return nil, fmt.Errorf("layer %q: overlayfs cannot stack a path with ':' or ','", dir)
		}
		if st, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("layer: %w", err)
		} else if !st.IsDir() {
			return nil, fmt.Errorf("layer %s: not a directory", dir)
		}
		l.below = append(l.below, dir)
	}
	if err := buildLower(l.lower, opts.Applets, opts.Image); err != nil {
		return nil, fmt.Errorf("build rootfs: %w", err)
	}
	for _, m := range opts.Mounts {
		// The mount point must exist in the image for runc to bind over it.
		if err := ensureMountPoint(m.Source, filepath.Join(l.lower, filepath.Clean("/"+m.Destination))); err != nil {
			return nil, fmt.Errorf("mount point %s: %w", m.Destination, err)
		}
	}
	if err := l.mount(); err != nil {
		return nil, err
	}
	spec, err := json.MarshalIndent(newSpec(c.ID, c.Rootfs, opts), "", "\t")
	if err == nil {
		err = os.WriteFile(filepath.Join(c.Bundle, "config.json"), spec, 0o600)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("write config.json: %w", err), l.unmount())
	}
	return c, nil
}

// Start starts the container detached, running opts.Args.
func (c *Container) Start() error { return c.runDetached() }

// Run runs the container in the foreground until its process exits or ctx
// ends, and returns its standard output. The error wraps *exec.ExitError
// when the process exits with a non-zero status and includes its standard
// error.
func (c *Container) Run(ctx context.Context) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := c.command(ctx, "run", "--bundle", c.Bundle, c.ID)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// runc forwards signals to the container's init, which as pid 1
	// ignores SIGTERM; kill the container itself instead of runc.
	cmd.Cancel = func() error {
		kctx, kcancel := context.WithTimeout(context.Background(), cmdTimeout)
		defer kcancel()
		return c.command(kctx, "kill", c.ID, "KILL").Run()
	}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", context.Cause(ctx), err)
		}
		return stdout.String(), fmt.Errorf("runc run %s: %w; stderr: %s",
			c.ID, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func newID(prefix string) (string, error) {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("container ID: %w", err)
	}
	return prefix + hex.EncodeToString(b), nil
}

// command returns a runc command using the container's private state root.
func (c *Container) command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, c.runc, append([]string{"--root", c.stateRoot}, args...)...)
}

// runDetached starts the container with "runc run --detach". runc hands
// its own stdio to the container's process, so they are files in the
// bundle: pipes would keep Wait blocked for the container's lifetime.
func (c *Container) runDetached() error {
	stdout, err := os.Create(filepath.Join(c.Bundle, "stdout.log"))
	if err != nil {
		return err
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(c.Bundle, "stderr.log"))
	if err != nil {
		return err
	}
	defer stderr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := c.command(ctx, "run", "--detach", "--bundle", c.Bundle, c.ID)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Run(); err != nil {
		msg, _ := os.ReadFile(stderr.Name())
		return fmt.Errorf("runc run --detach %s: %w: %s", c.ID, err, strings.TrimSpace(string(msg)))
	}
	return nil
}

// Exec runs args inside the running container with "runc exec" and returns
// their combined output. Cancelling ctx sends SIGTERM, which runc forwards
// to the process, and kills runc 2s later.
func (c *Container) Exec(ctx context.Context, args ...string) (string, error) {
	return c.exec(ctx, nil, args)
}

// ExecAs is Exec as the user uid:gid.
func (c *Container) ExecAs(ctx context.Context, uid, gid uint32, args ...string) (string, error) {
	return c.exec(ctx, []string{"--user", fmt.Sprintf("%d:%d", uid, gid)}, args)
}

func (c *Container) exec(ctx context.Context, flags, args []string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("Exec needs a command")
	}
	runcArgs := append(append([]string{"exec"}, flags...), c.ID)
	cmd := c.command(ctx, append(runcArgs, args...)...)
	cmd.Cancel = func() error { return cmd.Process.Signal(unix.SIGTERM) }
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("runc exec %s %s %q: %w", strings.Join(flags, " "), c.ID, args, err)
	}
	return string(out), nil
}

// State is the part of "runc state" used here.
type State struct {
	ID     string `json:"id"`
	PID    int    `json:"pid"`
	Status string `json:"status"`
}

// State returns "runc state" of the container.
func (c *Container) State() (State, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := c.command(ctx, "state", c.ID)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return State{}, fmt.Errorf("runc state %s: %w: %s", c.ID, err, strings.TrimSpace(stderr.String()))
	}
	var s State
	if err := json.Unmarshal(out, &s); err != nil {
		return State{}, fmt.Errorf("runc state %s: %w", c.ID, err)
	}
	return s, nil
}

// InitPID returns the host PID of the container's init process.
func (c *Container) InitPID() (int, error) {
	s, err := c.State()
	if err != nil {
		return 0, err
	}
	if s.PID <= 0 || s.Status != "running" {
		return 0, fmt.Errorf("container %s is %s (pid %d)", c.ID, s.Status, s.PID)
	}
	return s.PID, nil
}

// Path returns the host path of containerPath in the merged root
// filesystem.
func (c *Container) Path(containerPath string) string {
	return filepath.Join(c.Rootfs, filepath.Clean("/"+containerPath))
}

// UpperPath returns where containerPath lives in the upper layer once the
// container (or CopyIn) has written it.
func (c *Container) UpperPath(containerPath string) string {
	return filepath.Join(c.Upper, filepath.Clean("/"+containerPath))
}

// CopyIn copies the host file hostPath to containerPath in the container's
// root filesystem, creating parent directories. The copy lands in the
// overlay's upper layer.
func (c *Container) CopyIn(hostPath, containerPath string, mode os.FileMode) error {
	dst := c.Path(containerPath)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("copy %s into %s: %w", hostPath, c.ID, err)
	}
	if err := copyFile(hostPath, dst, mode); err != nil {
		return fmt.Errorf("copy %s into %s: %w", hostPath, c.ID, err)
	}
	return nil
}

// Stdout returns what a container started with Start has written to its
// standard output so far.
func (c *Container) Stdout() (string, error) {
	b, err := os.ReadFile(filepath.Join(c.Bundle, "stdout.log"))
	return string(b), err
}

// Teardown kills and deletes the container, unmounts the overlay and
// removes the container's cgroups. It tries every step.
func (c *Container) Teardown() error {
	l := c.layers
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	// Kill fails when the container has exited or was never created;
	// delete -f covers both.
	_ = c.command(ctx, "kill", c.ID, "KILL").Run()
	if out, err := c.command(ctx, "delete", "--force", c.ID).CombinedOutput(); err != nil &&
		!strings.Contains(string(out), "does not exist") {
		errs = append(errs, fmt.Errorf("runc delete: %w: %s", err, strings.TrimSpace(string(out))))
	}
	if err := l.unmount(); err != nil {
		errs = append(errs, err)
	}
	if err := removeCgroups(c.ID); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// removeCgroups removes CgroupParent/id from every cgroup hierarchy. The
// shared parent is left alone: other tests may be creating siblings.
func removeCgroups(id string) error {
	dirs, err := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", CgroupParent, id))
	if err != nil {
		return err
	}
	// cgroup2 mounted directly at /sys/fs/cgroup.
	dirs = append(dirs, filepath.Join("/sys/fs/cgroup", CgroupParent, id))
	var errs []error
	for _, d := range dirs {
		if err := rmdirRetry(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// rmdirRetry removes an empty cgroup, waiting briefly for killed
// processes to leave it.
func rmdirRetry(dir string) error {
	var err error
	for range 50 {
		err = unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", dir, err)
}
