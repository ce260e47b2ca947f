// Package procstat reads the few fields of /proc/<pid>/stat that Harrier
// needs: a process's parent and when it started.
package procstat

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Stat is what Parse reads of /proc/<pid>/stat.
type Stat struct {
	// Comm is the command name (field 2), without its parentheses.
	Comm string
	PPID int
	// StartTicks is when the process started, in clock ticks (USER_HZ,
	// 100 on Linux) since boot.
	StartTicks uint64
}

// tick is one USER_HZ clock tick; Linux fixes USER_HZ at 100.
const tick = 10 * time.Millisecond

// Read reads and parses /proc/<pid>/stat under procRoot ("" means /proc).
func Read(procRoot string, pid int) (Stat, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	b, err := os.ReadFile(procRoot + "/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, fmt.Errorf("process %d: %w", pid, err)
	}
	st, err := Parse(string(b))
	if err != nil {
		return Stat{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return st, nil
}

// Parse extracts comm (field 2), ppid (4) and starttime (22) from the text
// of /proc/<pid>/stat. comm may hold spaces and parentheses, so it ends at
// the last ')'.
func Parse(s string) (Stat, error) {
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return Stat{}, fmt.Errorf("malformed stat %q", s)
	}
	// fields[0] is field 3 (state), so field N is fields[N-3].
	fields := strings.Fields(s[end+1:])
	if len(fields) < 20 {
		return Stat{}, fmt.Errorf("stat has %d fields after comm, want at least 20", len(fields))
	}
	ppid, err := strconv.ParseUint(fields[1], 10, 32)
	if err != nil {
		return Stat{}, fmt.Errorf("stat ppid: %w", err)
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("stat starttime: %w", err)
	}
	return Stat{Comm: s[open+1 : end], PPID: int(ppid), StartTicks: start}, nil
}

// SinceBoot is how long after boot the process started.
func (s Stat) SinceBoot() time.Duration { return time.Duration(s.StartTicks) * tick }

// BootTime is when this machine booted, by the wall clock now (CLOCK_BOOTTIME
// counts suspended time too, as process start times do).
func BootTime() (time.Time, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}, fmt.Errorf("boot time: %w", err)
	}
	return time.Now().Add(-time.Duration(ts.Nano())), nil
}
