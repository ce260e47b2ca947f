package proc

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/procstat"
)

// Seed fills the cache from a procfs tree (normally "/proc") so processes
// started before the sensor have details and ancestry. It returns how many
// entries it inserted; the error is non-nil only when procRoot cannot be
// listed.
//
// Processes that vanish while being read are skipped silently. Processes
// whose stat or status cannot be read for lack of permission are skipped;
// denied exe, cwd or cmdline links leave those fields empty. Both count in
// Stats.SeedPermissionDenied; malformed files count in Stats.SeedFailed.
//
// Seed never overwrites an entry already present: the sensor should attach
// its probes before seeding, and anything they reported is fresher. Seeded
// entries carry tick-granular (10ms) start times, which the cache tolerates
// when matching them against exact kernel times. Seed cannot learn
// CgroupID or OverlayUpper from procfs and leaves them zero.
func (c *Cache) Seed(procRoot string) (int, error) {
	dirents, err := os.ReadDir(procRoot)
	if err != nil {
		return 0, fmt.Errorf("seed process cache: %w", err)
	}
	pids := make([]uint32, 0, len(dirents))
	for _, d := range dirents {
		if pid, err := strconv.ParseUint(d.Name(), 10, 32); err == nil && pid > 0 {
			pids = append(pids, uint32(pid))
		}
	}
	// Insert the highest pids first: if the table overflows, LRU eviction
	// then drops recent pids and keeps low, long-lived ones (init, daemons,
	// login shells), which are the most common ancestors.
	slices.Sort(pids)
	slices.Reverse(pids)

	inserted := 0
	for _, pid := range pids {
		e, args, denied, err := readProc(filepath.Join(procRoot, strconv.FormatUint(uint64(pid), 10)), pid, c.maxArgBytes)
		c.mu.Lock()
		if denied {
			c.stats.SeedPermissionDenied++
		}
		switch {
		case errors.Is(err, errVanished), denied && err != nil:
			// Expected: skipped silently, or already counted as denied.
		case err != nil:
			c.stats.SeedFailed++
		default:
			if _, ok := c.byTgid[pid]; !ok {
				c.insert(e, args)
				c.stats.Seeded++
				inserted++
			}
		}
		c.mu.Unlock()
	}
	return inserted, nil
}

// errVanished marks a process that exited while Seed was reading it.
var errVanished = errors.New("process vanished")

// readProc reads one /proc/PID directory. denied reports that some file
// could not be read for lack of permission; err is non-nil when the entry
// is unusable.
func readProc(dir string, pid uint32, maxArgBytes int) (e Entry, args string, denied bool, err error) {
	e.Tgid = pid
	// required reads stat and status, without which there is no lineage.
	required := func(name string) (string, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		switch {
		case err == nil:
			return string(b), nil
		case gone(err):
			return "", errVanished
		case errors.Is(err, fs.ErrPermission):
			denied = true
		}
		return "", fmt.Errorf("read %s: %w", name, err)
	}
	// optional absorbs errors: kernel threads and zombies have no exe,
	// cwd or cmdline, and other users' links need ptrace access.
	optional := func(v string, err error) string {
		if errors.Is(err, fs.ErrPermission) {
			denied = true
		}
		if err != nil {
			return ""
		}
		return v
	}

	stat, err := required("stat")
	if err != nil {
		return e, "", denied, err
	}
	var startTicks uint64
	if e.Comm, e.Ppid, startTicks, err = parseStat(stat); err != nil {
		return e, "", denied, fmt.Errorf("%s: %w", dir, err)
	}
	e.StartBootNs = startTicks * clockTicksNs
	e.Comm = api.TextString(e.Comm)

	status, err := required("status")
	if err != nil {
		return e, "", denied, err
	}
	if e.Uid, e.Euid, e.Gid, e.Egid, err = parseStatus(status); err != nil {
		return e, "", denied, fmt.Errorf("%s: %w", dir, err)
	}
	e.CapEffective, e.CapBounding = StatusCaps(status)

	// Names are arbitrary bytes; events need valid UTF-8.
	e.Exe, e.ExeOrigin = parseExe(api.TextString(optional(os.Readlink(filepath.Join(dir, "exe")))))
	e.Cwd = api.TextString(optional(os.Readlink(filepath.Join(dir, "cwd"))))
	e.Cgroup = api.TextString(parseCgroup(optional(readLimited(filepath.Join(dir, "cgroup"), 64<<10))))
	// One byte past the budget is enough for packArgs to see the overflow.
	cmdline := api.TextString(optional(readLimited(filepath.Join(dir, "cmdline"), maxArgBytes+1)))
	args, e.ArgsTruncated = packArgs(splitCmdline(cmdline), maxArgBytes)
	// The optional reads cannot tell an exit from a kernel thread; a final
	// look at the directory can.
	if _, err := os.Stat(filepath.Join(dir, "stat")); gone(err) {
		return e, "", denied, errVanished
	}
	return e, args, denied, nil
}

// gone reports errors meaning the process no longer exists.
func gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH)
}

// readLimited reads at most limit bytes: cmdline can be megabytes long and
// only the budget is kept.
func readLimited(path string, limit int) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	buf := make([]byte, limit)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return string(buf[:n]), nil
}

// parseStat extracts comm, ppid and starttime (clock ticks since boot)
// from /proc/PID/stat.
func parseStat(s string) (comm string, ppid uint32, startTicks uint64, err error) {
	st, err := procstat.Parse(s)
	if err != nil {
		return "", 0, 0, err
	}
	return st.Comm, uint32(st.PPID), st.StartTicks, nil
}

// parseStatus extracts the real and effective ids from the Uid: and Gid:
// lines of /proc/PID/status ("Uid:\treal\teffective\tsaved\tfs").
func parseStatus(s string) (uid, euid, gid, egid uint32, err error) {
	var haveUID, haveGID bool
	for line := range strings.Lines(s) {
		var rp, ep *uint32
		switch {
		case strings.HasPrefix(line, "Uid:"):
			rp, ep, haveUID = &uid, &euid, true
		case strings.HasPrefix(line, "Gid:"):
			rp, ep, haveGID = &gid, &egid, true
		default:
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			return 0, 0, 0, 0, fmt.Errorf("malformed status line %q", line)
		}
		r, err := strconv.ParseUint(f[1], 10, 32)
		if err != nil {
			return 0, 0, 0, 0, fmt.Errorf("status real id: %w", err)
		}
		ef, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return 0, 0, 0, 0, fmt.Errorf("status effective id: %w", err)
		}
		*rp, *ep = uint32(r), uint32(ef)
	}
	if !haveUID || !haveGID {
		return 0, 0, 0, 0, errors.New("status lacks Uid or Gid line")
	}
	return uid, euid, gid, egid, nil
}

// StatusCaps reads the CapEff: and CapBnd: lines (hexadecimal) of
// /proc/PID/status; a missing or malformed line reads as no capabilities.
func StatusCaps(s string) (effective, bounding uint64) {
	for line := range strings.Lines(s) {
		name, value, ok := strings.Cut(line, ":")
		if !ok || (name != "CapEff" && name != "CapBnd") {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSpace(value), 16, 64)
		if err != nil {
			continue
		}
		if name == "CapEff" {
			effective = v
		} else {
			bounding = v
		}
	}
	return effective, bounding
}

// parseExe interprets the /proc/PID/exe link text. The kernel appends
// " (deleted)" when the file has no links left; memfd executables read as
// "/memfd:NAME (deleted)".
func parseExe(link string) (string, ExeOrigin) {
	var o ExeOrigin
	if exe, ok := strings.CutSuffix(link, " (deleted)"); ok {
		link, o.Deleted = exe, true
	}
	o.Memfd = strings.HasPrefix(link, "/memfd:")
	return link, o
}

// parseCgroup returns the cgroup v2 ("0::") path of /proc/PID/cgroup, or
// the first line's path on a v1-only host.
func parseCgroup(s string) string {
	first, haveFirst := "", false
	for line := range strings.Lines(s) {
		line = strings.TrimSuffix(line, "\n")
		// hierarchy-ID:controller-list:path; the path itself may contain ':'.
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			return parts[2]
		}
		if !haveFirst {
			first, haveFirst = parts[2], true
		}
	}
	return first
}

// splitCmdline splits NUL-terminated arguments. A process that rewrote its
// argv may leave no terminators; its text then is one argument.
func splitCmdline(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\x00"), "\x00")
}
