package response

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/harrier-sec/harrier/internal/procstat"
)

// StartTolerance is how far a process's start time read from /proc (10 ms
// ticks) may be from the one the alert carries (the kernel's, in
// nanoseconds) and still be the same process. A PID reused within it is not
// a practical concern; a PID reused later fails the check.
const StartTolerance = 50 * time.Millisecond

// Target is the process an alert names: its PID in the host's namespace
// and when it started.
type Target struct {
	PID       int
	StartTime time.Time
}

// Killed is what KillProcessTree did.
type Killed struct {
	// PIDs are the processes killed: the target first, then its
	// descendants.
	PIDs []int
	// Took is from the call to the last signal sent.
	Took time.Duration
	// Spared are descendants left alone, with their own descendants,
	// because spare said so (protected processes).
	Spared []int
}

// ErrNotTarget means the PID now belongs to another process (the target
// exited and the PID was reused) or is gone: nothing was signalled.
var ErrNotTarget = errors.New("the process is no longer the alert's")

// KillProcessTree kills t and its descendants. Each process is pinned by a
// pidfd before it is checked (the target by its start time, a descendant
// by its parent), so a signal never reaches a process that merely reused a
// PID; the tree is stopped (SIGSTOP) before anything is killed, so none of
// it forks away meanwhile. procRoot is "" for /proc.
func KillProcessTree(procRoot string, t Target) (Killed, error) {
	return killProcessTree(procRoot, t, nil)
}

// killProcessTree is KillProcessTree sparing the descendants spare names
// (nil spares none) and theirs.
func killProcessTree(procRoot string, t Target, spare func(pid int) bool) (Killed, error) {
	start := time.Now()
	var spared []int
	root, err := pinTarget(procRoot, t)
	if err != nil {
		return Killed{}, err
	}
	tree := []pinned{root}
	defer func() {
		for _, p := range tree {
			unix.Close(p.fd)
		}
	}()
	if err := unix.PidfdSendSignal(root.fd, unix.SIGSTOP, nil, 0); err != nil {
		return Killed{}, fmt.Errorf("stop process %d: %w", root.pid, err)
	}
	// Breadth first: each stopped process's children, pinned and stopped
	// in turn. A child is checked to still be its parent's after pinning.
	for i := 0; i < len(tree); i++ {
		parent := tree[i].pid
		for _, child := range children(procRoot, parent) {
			if slices.ContainsFunc(tree, func(p pinned) bool { return p.pid == child }) {
				continue
			}
			p, err := pin(procRoot, child, func(st procstat.Stat) error {
				if st.PPID != parent {
					return ErrNotTarget
				}
				return nil
			})
			if err != nil {
				continue // exited, or no longer a child
			}
			if spare != nil && spare(child) {
				unix.Close(p.fd)
				spared = append(spared, child)
				continue
			}
			tree = append(tree, p)
			_ = unix.PidfdSendSignal(p.fd, unix.SIGSTOP, nil, 0)
		}
	}
	out := Killed{Spared: spared}
	var errs []error
	for _, p := range tree {
		if err := unix.PidfdSendSignal(p.fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("kill process %d: %w", p.pid, err))
			continue
		}
		out.PIDs = append(out.PIDs, p.pid)
	}
	out.Took = time.Since(start)
	return out, errors.Join(errs...)
}

type pinned struct{ pid, fd int }

// pinTarget pins t's PID and checks that it is still t: started within
// StartTolerance of t.StartTime.
func pinTarget(procRoot string, t Target) (pinned, error) {
	return pin(procRoot, t.PID, func(st procstat.Stat) error {
		boot, err := procstat.BootTime()
		if err != nil {
			return err
		}
		if d := boot.Add(st.SinceBoot()).Sub(t.StartTime); d > StartTolerance || d < -StartTolerance {
			return fmt.Errorf("process %d started %s from the alert's process: %w", t.PID, d.Round(time.Millisecond), ErrNotTarget)
		}
		return nil
	})
}

// pin opens a pidfd for pid and only then checks it with check: from then
// on the pidfd refers to the process that passed.
func pin(procRoot string, pid int, check func(procstat.Stat) error) (pinned, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return pinned{}, fmt.Errorf("process %d: %w", pid, ErrNotTarget)
		}
		return pinned{}, fmt.Errorf("pidfd of process %d: %w", pid, err)
	}
	st, err := procstat.Read(procRoot, pid)
	if err == nil {
		err = check(st)
	}
	if err != nil {
		unix.Close(fd)
		if errors.Is(err, os.ErrNotExist) {
			err = fmt.Errorf("%w: %w", ErrNotTarget, err)
		}
		return pinned{}, err
	}
	return pinned{pid: pid, fd: fd}, nil
}

// children lists pid's children from every thread's children file.
func children(procRoot string, pid int) []int {
	if procRoot == "" {
		procRoot = "/proc"
	}
	dir := procRoot + "/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/children")
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil && !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	return out
}
