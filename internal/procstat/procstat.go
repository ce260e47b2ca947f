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

// Stat is what Read returns of /proc/<pid>/stat.
type Stat struct {
	PPID int
	// StartTicks is when the process started, in clock ticks (USER_HZ,
	// 100 on Linux) since boot.
	StartTicks uint64
}

// tick is one USER_HZ clock tick; Linux fixes USER_HZ at 100.
const tick = 10 * time.Millisecond

// Read parses /proc/<pid>/stat under procRoot ("" means /proc).
func Read(procRoot string, pid int) (Stat, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	b, err := os.ReadFile(procRoot + "/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, fmt.Errorf("process %d: %w", pid, err)
	}
	// comm (field 2) may hold spaces and parentheses: the fields after it
	// start after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("process %d: stat has no command field", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, starttime field 22.
	if len(f) < 20 {
		return Stat{}, fmt.Errorf("process %d: stat has %d fields", pid, len(f)+2)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Stat{}, fmt.Errorf("process %d: ppid: %w", pid, err)
	}
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("process %d: starttime: %w", pid, err)
	}
	return Stat{PPID: ppid, StartTicks: ticks}, nil
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
