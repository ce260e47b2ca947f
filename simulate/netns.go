package simulate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// NetnsCommand is the hidden subcommand that runs a program inside a
// sandbox network namespace: harrier <NetnsCommand> NETNS-PATH PROGRAM ARGS...
// It enters the namespace on its own thread and execs PROGRAM, so the whole
// new process lives there (a Go process cannot move all its threads). The
// simulator uses it for ip(8) and for its attacker services; no nsenter is
// needed.
const NetnsCommand = "__simulate-netns"

// AttackerCommand is the hidden subcommand serving the attacker's side; see
// ServeAttacker.
const AttackerCommand = "__simulate-attacker"

// EnterNetnsAndExec implements NetnsCommand. It refuses the caller's own
// network namespace: everything it runs is meant for the sandbox only.
func EnterNetnsAndExec(nsPath string, argv []string) error {
	if len(argv) == 0 {
		return errors.New("usage: " + NetnsCommand + " NETNS PROGRAM [ARGS...]")
	}
	prog, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("%s: %w", argv[0], err)
	}
	runtime.LockOSThread() // setns changes this thread only; exec keeps it
	fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", nsPath, err)
	}
	defer unix.Close(fd)
	target, err := nsInode(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return err
	}
	own, err := nsInode("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	if target == own {
		return fmt.Errorf("%s is this process's own network namespace, not a sandbox's", nsPath)
	}
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns %s: %w", nsPath, err)
	}
	env := append(os.Environ(), "HARRIER_SIMULATE_NETNS="+strconv.FormatUint(target, 10))
	return syscall.Exec(prog, argv, env)
}

func nsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Ino, nil
}

// checkInSandbox confirms that this process was started by
// EnterNetnsAndExec and still is in that namespace.
func checkInSandbox() error {
	want, err := strconv.ParseUint(os.Getenv("HARRIER_SIMULATE_NETNS"), 10, 64)
	if err != nil {
		return errors.New("not started in a sandbox network namespace")
	}
	got, err := nsInode("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("network namespace %d, want the sandbox's %d", got, want)
	}
	return nil
}

// netns runs commands in one sandbox network namespace through the
// simulator's own binary.
type netns struct {
	self string // the harrier binary
	path string // /proc/PID/ns/net of a container's init
	ip   string // ip(8)
}

func (n netns) run(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, n.self, append([]string{NetnsCommand, n.path, n.ip}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s (in %s): %w: %s", strings.Join(args, " "), n.path, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func findIP() (string, error) {
	if p, err := exec.LookPath("ip"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/bin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("ip (iproute2) not found: it configures the sandbox's network namespaces")
}
