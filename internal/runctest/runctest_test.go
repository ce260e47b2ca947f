package runctest_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/internal/runctest"
)

// running reports whether pid exists and is not a zombie. The killed
// container's init is reparented to the host's pid 1, which may take a
// while to reap it.
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

func TestRun(t *testing.T) {
	runctest.Require(t)
	t.Parallel()
	out, err := runctest.Run(t, runctest.Options{Args: []string{"sh", "-c", "echo hello; id -u"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "hello\n0\n"; out != want {
		t.Errorf("output = %q, want %q", out, want)
	}
}

func TestRunUser(t *testing.T) {
	runctest.Require(t)
	t.Parallel()
	out, err := runctest.Run(t, runctest.Options{
		Args: []string{"sh", "-c", "id -u; id -g; echo $HOME; echo $FOO"},
		UID:  1000, GID: 1000,
		Env: []string{"FOO=bar"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "1000\n1000\n/home/user\nbar\n"; out != want {
		t.Errorf("output = %q, want %q", out, want)
	}
}

func TestRunExitStatus(t *testing.T) {
	runctest.Require(t)
	t.Parallel()
	_, err := runctest.Run(t, runctest.Options{Args: []string{"sh", "-c", "echo oops >&2; exit 3"}})
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("err = %v, want exit status 3", err)
	}
	if !strings.Contains(err.Error(), "oops") {
		t.Errorf("err = %v, want it to include stderr", err)
	}
}

func TestRunTimeout(t *testing.T) {
	runctest.Require(t)
	t.Parallel()
	start := time.Now()
	_, err := runctest.Run(t, runctest.Options{Args: []string{"sleep", "60"}, Timeout: time.Second})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %v after a 1s timeout", d)
	}
}

func TestStart(t *testing.T) {
	runctest.Require(t)
	t.Parallel()
	c := runctest.Start(t, runctest.Options{Args: []string{"sh", "-c", "echo started; exec sleep 3600"}})
	if !strings.HasPrefix(c.ID, runctest.IDPrefix) {
		t.Errorf("ID = %q", c.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	out, err := c.Exec(ctx, "cat", "/proc/1/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	if want := "sleep\x003600\x00"; out != want {
		t.Errorf("/proc/1/cmdline = %q, want %q", out, want)
	}

	pid, err := c.InitPID()
	if err != nil {
		t.Fatal(err)
	}
	if !running(pid) {
		t.Fatalf("init pid %d is not running", pid)
	}
	cg, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	if want := runctest.CgroupParent + "/" + c.ID; !strings.Contains(string(cg), want) {
		t.Errorf("/proc/%d/cgroup does not contain %q:\n%s", pid, want, cg)
	}

	// Fresh network namespace: only lo.
	out, err = c.Exec(ctx, "ls", "/sys/class/net")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "lo" {
		t.Errorf("interfaces = %q, want only lo", out)
	}

	if err := c.CopyIn("/bin/busybox", "/opt/busybox", 0o755); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(c.Upper, "opt/busybox"))
	if err != nil {
		t.Fatalf("copied file is not in the upper layer: %v", err)
	}
	if fi.Mode().Perm() != 0o755 {
		t.Errorf("mode = %v, want 0755", fi.Mode())
	}
	out, err = c.Exec(ctx, "/opt/busybox", "echo", "from upper")
	if err != nil {
		t.Fatal(err)
	}
	if out != "from upper\n" {
		t.Errorf("payload output = %q", out)
	}

	// Writes from inside the container land in the upper layer too.
	if _, err := c.Exec(ctx, "sh", "-c", "echo x > /tmp/written"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.UpperPath("/tmp/written")); err != nil {
		t.Errorf("file written in the container is not in the upper layer: %v", err)
	}
	if _, err := os.Stat(filepath.Join(c.Lower, "tmp/written")); err == nil {
		t.Errorf("file written in the container reached the lower layer")
	}

	if got, err := c.Stdout(); err != nil || got != "started\n" {
		t.Errorf("Stdout() = %q, %v", got, err)
	}
}

func TestExecCancel(t *testing.T) {
	runctest.Require(t)
	t.Parallel()
	c := runctest.Start(t, runctest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	if _, err := c.Exec(ctx, "sleep", "60"); err == nil {
		t.Fatal("Exec of sleep 60 with 1s timeout succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Exec took %v after a 1s timeout", d)
	}
}

// TestTeardown checks that a container's cgroups, overlay mount and
// process are gone once its test has finished.
func TestTeardown(t *testing.T) {
	runctest.Require(t)
	t.Parallel()
	var c *runctest.Container
	var pid int
	t.Run("inner", func(t *testing.T) {
		c = runctest.Start(t, runctest.Options{})
		var err error
		if pid, err = c.InitPID(); err != nil {
			t.Fatal(err)
		}
	})
	if c == nil || pid == 0 {
		t.Fatal("inner test did not start a container")
	}
	if running(pid) {
		t.Errorf("container init %d still running after cleanup", pid)
	}
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", runctest.CgroupParent, c.ID))
	if len(dirs) != 0 {
		t.Errorf("cgroups left behind: %v", dirs)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), c.Rootfs) {
		t.Errorf("overlay %s still mounted", c.Rootfs)
	}
}

func TestImageAppletsExecAs(t *testing.T) {
	runctest.Require(t)
	t.Parallel()
	c := runctest.Start(t, runctest.Options{
		Applets: []string{"httpd", "cat"},
		Image: map[string]runctest.File{
			"/etc/secret":      {Content: "s3cret\n", Mode: 0o600},
			"/opt/bin/busybox": {Host: runctest.BusyboxPath},
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := c.Exec(ctx, "sh", "-c", "cat /etc/secret; stat -c %a /etc/secret; readlink /bin/httpd; /opt/bin/busybox echo ok")
	if err != nil {
		t.Fatal(err, out)
	}
	if want := "s3cret\n600\nbusybox\nok\n"; out != want {
		t.Errorf("output = %q, want %q", out, want)
	}
	if _, err := os.Stat(c.UpperPath("/etc/secret")); !os.IsNotExist(err) {
		t.Errorf("image file is in the upper layer: %v", err)
	}
	out, err = c.ExecAs(ctx, 1000, 1000, "sh", "-c", "id -u; cat /etc/secret 2>&1")
	if err == nil || !strings.HasPrefix(out, "1000\n") || !strings.Contains(out, "Permission denied") {
		t.Errorf("non-root read of a 0600 root file: %v %q", err, out)
	}
}

// TestLayers: a read-only layer stacked under busybox shows its files,
// busybox's own files win where both have one, and the container's writes
// stay in its upper layer, never in the shared layer.
func TestLayers(t *testing.T) {
	runctest.Require(t)
	t.Parallel()
	layer := t.TempDir()
	for name, content := range map[string]string{
		"usr/share/corpus/data.txt": "from the layer\n",
		"etc/hosts":                 "overridden by busybox's layer\n",
	} {
		p := filepath.Join(layer, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out, err := runctest.Run(t, runctest.Options{Layers: []string{layer}, Args: []string{"sh", "-c",
		"cat /usr/share/corpus/data.txt && grep -c localhost /etc/hosts && echo changed > /usr/share/corpus/data.txt && cat /usr/share/corpus/data.txt"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := "from the layer\n2\nchanged\n"; out != want {
		t.Errorf("output = %q, want %q", out, want)
	}
	if b, err := os.ReadFile(filepath.Join(layer, "usr/share/corpus/data.txt")); err != nil || string(b) != "from the layer\n" {
		t.Errorf("the shared layer was written: %q, %v", b, err)
	}
	for _, bad := range []string{filepath.Join(layer, "missing"), layer + ":x"} {
		if _, err := runctest.Run(t, runctest.Options{Layers: []string{bad}, Args: []string{"true"}}); err == nil {
			t.Errorf("layer %q accepted", bad)
		}
	}
}
