// Package proc keeps the sensor's bounded cache of processes: who each thread
// group is (exe, argv, creds, cwd, cgroup) and who its parents were, so every
// kernel event can be enriched with process details and ancestry.
package proc

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/harrier-sec/harrier/api"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ExeOrigin records where a process's executable came from; see api.ExeOrigin.
type ExeOrigin struct {
	OverlayUpper bool
	Memfd        bool
	Deleted      bool
}

// Entry is one process (thread group). It is a plain struct rather than an
// api.Process because the cache holds tens of thousands of them and protobuf
// messages carry per-message overhead; conversion happens only per event.
//
// Fields are ordered largest first to avoid padding.
type Entry struct {
	// StartBootNs is the start time in ns since boot (CLOCK_BOOTTIME), as in
	// task->start_boottime. Together with Tgid it identifies a process across
	// pid reuse. 0 means unknown.
	StartBootNs uint64
	// CgroupID is the cgroup v2 id (kernfs inode) from the kernel; Seed cannot
	// learn it from /proc and leaves it 0.
	CgroupID uint64

	Comm string
	Exe  string
	Cwd  string
	// Cgroup is the raw cgroup path of the process (the "0::" line of
	// /proc/PID/cgroup, else the first line's path); container resolution
	// parses it elsewhere.
	Cgroup string
	// Args is argv. Entries returned by the Cache own a fresh slice, so
	// callers may modify it.
	Args []string

	Tgid uint32
	Ppid uint32
	Uid  uint32
	Gid  uint32
	Euid uint32
	Egid uint32

	// CapEffective and CapBounding are the capability sets (bit N is
	// capability N) as executed, or as /proc showed them when seeded.
	CapEffective, CapBounding uint64

	ExeOrigin     ExeOrigin
	ArgsTruncated bool
	// Exited is true once the process has exited; the cache keeps it for a
	// while so late events and orphaned children still resolve.
	Exited bool
}

// ToProcess converts e for an event. bootTime is the wall-clock time of boot
// (now minus CLOCK_BOOTTIME), used to turn StartBootNs into a timestamp. Pid is
// set to Tgid; the caller overrides it with the thread id when they differ.
// The result shares e.Args. ExeOrigin is nil when no flag is set.
func (e *Entry) ToProcess(bootTime time.Time) *api.Process {
	p := &api.Process{
		Pid:           e.Tgid,
		Tgid:          e.Tgid,
		Ppid:          e.Ppid,
		Uid:           e.Uid,
		Gid:           e.Gid,
		Euid:          e.Euid,
		Egid:          e.Egid,
		Comm:          e.Comm,
		Exe:           e.Exe,
		Args:          e.Args,
		ArgsTruncated: e.ArgsTruncated,
		Cwd:           e.Cwd,
		StartTime:     startTime(bootTime, e.StartBootNs),
		CapEffective:  e.CapEffective,
		CapBounding:   e.CapBounding,
	}
	if o := e.ExeOrigin; o != (ExeOrigin{}) {
		p.ExeOrigin = &api.ExeOrigin{OverlayUpper: o.OverlayUpper, Memfd: o.Memfd, Deleted: o.Deleted}
	}
	return p
}

// ToAncestor converts e to one link of an ancestry chain. The result shares e.Args.
func (e *Entry) ToAncestor(bootTime time.Time) *api.Ancestor {
	return &api.Ancestor{
		Pid:       e.Tgid,
		Exe:       e.Exe,
		Args:      e.Args,
		Uid:       e.Uid,
		StartTime: startTime(bootTime, e.StartBootNs),
	}
}

// ToAncestry converts a chain from Cache.Ancestry, keeping its order (nearest
// parent first). It returns nil for an empty chain.
func ToAncestry(chain []Entry, bootTime time.Time) []*api.Ancestor {
	if len(chain) == 0 {
		return nil
	}
	out := make([]*api.Ancestor, len(chain))
	for i := range chain {
		out[i] = chain[i].ToAncestor(bootTime)
	}
	return out
}

func startTime(bootTime time.Time, bootNs uint64) *timestamppb.Timestamp {
	if bootNs == 0 {
		return nil
	}
	return timestamppb.New(bootTime.Add(time.Duration(bootNs)))
}

// clockTicksNs is the length of one USER_HZ tick (USER_HZ is 100 on every
// Linux ABI), the granularity of /proc/PID/stat starttime.
const clockTicksNs = 1e9 / 100

// sameStart reports whether two start times can belong to the same process.
// Times from /proc are truncated to a tick while the kernel's events are
// exact, so they are compared at tick granularity; pids cannot wrap within
// 10ms. An unknown (0) time matches anything, so callers that do not supply
// a start time never cause spurious pid-reuse replacement.
func sameStart(a, b uint64) bool {
	return a == 0 || b == 0 || a/clockTicksNs == b/clockTicksNs
}

// startedAfter reports whether a definitely started after b, at tick
// granularity. Unknown times are never "after".
func startedAfter(a, b uint64) bool {
	return a != 0 && b != 0 && a/clockTicksNs > b/clockTicksNs
}

// packArgs stores argv as one string with every argument NUL-terminated, the
// layout of /proc/PID/cmdline. One allocation per entry, a hard bound of
// limit bytes (terminators included, so even floods of empty arguments are
// bounded), and no references into the caller's buffers. Forked children
// share their parent's packed string. truncated is true when something was
// dropped; a partially kept argument is cut at a rune boundary so valid UTF-8
// stays valid (protobuf strings must be).
func packArgs(args []string, limit int) (packed string, truncated bool) {
	size, keep := 0, 0
	for _, a := range args {
		if size+len(a)+1 > limit {
			truncated = true
			break
		}
		size += len(a) + 1
		keep++
	}
	partial := ""
	if truncated {
		if room := limit - size - 1; room > 0 {
			a := args[keep] // len(a) >= room, else it would have fitted
			for room > 0 && !utf8.RuneStart(a[room]) {
				room--
			}
			partial = a[:room]
		}
	}
	if size == 0 && partial == "" {
		return "", truncated
	}
	var b strings.Builder
	b.Grow(size + len(partial) + 1)
	for _, a := range args[:keep] {
		b.WriteString(a)
		b.WriteByte(0)
	}
	if partial != "" {
		b.WriteString(partial)
		b.WriteByte(0)
	}
	return b.String(), truncated
}

// unpackArgs returns a fresh slice whose strings point into packed.
func unpackArgs(packed string) []string {
	if packed == "" {
		return nil
	}
	return unpackInto(make([]string, argCount(packed)), packed)
}

// argCount is the number of arguments in a packed argv.
func argCount(packed string) int {
	return strings.Count(packed, "\x00")
}

// unpackInto fills dst, which must have argCount(packed) elements, and
// returns it, or nil for no arguments.
func unpackInto(dst []string, packed string) []string {
	if len(dst) == 0 {
		return nil
	}
	for i := range dst {
		j := strings.IndexByte(packed, 0)
		dst[i], packed = packed[:j], packed[j+1:]
	}
	return dst
}
