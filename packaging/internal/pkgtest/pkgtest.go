// Package pkgtest holds what the packaging tests share: where the repository
// is, building the harrier binary, and requiring host tools.
package pkgtest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RepoRoot is the Harrier repository (the parent of packaging/), found from
// this file so tests work from any package directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate pkgtest source")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// BuildHarrier builds the static binary for this machine into a directory
// everyone can read (a test may run it as another user).
func BuildHarrier(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "harrier-pkgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "harrier")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	cmd.Dir = RepoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// RequireTool returns the path of a host tool. Missing, it skips the test
// on a developer's machine and fails it in CI, where `make deps` installs it.
func RequireTool(t testing.TB, name, debPackage string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found: `make deps` installs it (Debian package %s)", name, debPackage)
	}
	t.Skipf("%s not found (apt-get install %s)", name, debPackage)
	return ""
}

// PublicTempDir is a temporary directory that other users may enter (the
// parents of t.TempDir are private).
func PublicTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "harrier-pkgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Notify is a unixgram socket standing in for systemd's NOTIFY_SOCKET.
type Notify struct {
	Path     string
	messages chan string
}

// ListenNotify opens a notify socket any user may send to.
func ListenNotify(t testing.TB) *Notify {
	t.Helper()
	path := filepath.Join(PublicTempDir(t), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := os.Chmod(path, 0o777); err != nil {
		t.Fatal(err)
	}
	n := &Notify{Path: path, messages: make(chan string, 16)}
	go func() {
		defer close(n.messages)
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.messages <- string(buf[:k])
		}
	}()
	return n
}

// Await reports whether a datagram carrying the line want (e.g. READY=1)
// arrives within d.
func (n *Notify) Await(want string, d time.Duration) bool {
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-n.messages:
			if !ok {
				return false
			}
			if slices.Contains(strings.Split(m, "\n"), want) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

// Buffer collects a child's output while the test reads it.
type Buffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// StartUntilReady starts cmd with NOTIFY_SOCKET set and waits for READY=1.
// It reports whether READY=1 arrived, what the process printed, and a stop
// function (SIGTERM, then wait) that is also registered as a cleanup. The
// process is waited for in one place only: exec.Cmd.Wait must not be called
// twice.
func StartUntilReady(t testing.TB, cmd *exec.Cmd, d time.Duration) (bool, *Buffer, func()) {
	t.Helper()
	n := ListenNotify(t)
	cmd.Env = append(cmd.Environ(), "NOTIFY_SOCKET="+n.Path)
	logs := &Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		})
	}
	t.Cleanup(stop)
	ready := make(chan bool, 1)
	go func() { ready <- n.Await("READY=1", d) }()
	select {
	case ok := <-ready:
		return ok, logs, stop
	case <-exited:
		return false, logs, stop
	}
}

// UnitDirectives returns the values of key (e.g. ExecStart) in a systemd
// unit file, in order.
func UnitDirectives(t testing.TB, unit, key string) []string {
	t.Helper()
	raw, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for line := range strings.Lines(string(raw)) {
		k, v, ok := strings.Cut(strings.TrimRight(line, "\n"), "=")
		if ok && k == key {
			vals = append(vals, v)
		}
	}
	return vals
}

// UnitCaps turns a unit's CapabilityBoundingSet=CAP_BPF CAP_PERFMON into
// setpriv's names: bpf, perfmon.
func UnitCaps(t testing.TB, unit string) []string {
	t.Helper()
	var caps []string
	for _, v := range UnitDirectives(t, unit, "CapabilityBoundingSet") {
		for c := range strings.FieldsSeq(v) {
			caps = append(caps, strings.ToLower(strings.TrimPrefix(c, "CAP_")))
		}
	}
	return caps
}

// Setpriv runs args as root with only caps in the bounding set (what
// CapabilityBoundingSet= does for a root service) and no new privileges.
func Setpriv(caps []string, args ...string) *exec.Cmd {
	bounding := "-all"
	for _, c := range caps {
		bounding += ",+" + c
	}
	return exec.Command("setpriv", append([]string{"--no-new-privs", "--bounding-set=" + bounding, "--inh-caps=-all", "--"}, args...)...)
}
