// Package mountinfo parses /proc/PID/mountinfo and finds the cgroup
// hierarchies in it: shared by the sensor (container context) and response
// (cgroup actions), so that neither links the other.
package mountinfo

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// ErrMalformed is wrapped by parse errors for /proc mountinfo and cgroup
// files.
var ErrMalformed = errors.New("malformed line")

// MaxLine bounds one mountinfo line; overlay mounts with many lower
// directories exceed bufio.Scanner's 64 KiB default.
const MaxLine = 1 << 20

// Mount is one line of /proc/PID/mountinfo (see proc(5)). Root,
// MountPoint and Source have their octal escapes decoded.
type Mount struct {
	ID, ParentID int
	Major, Minor uint32
	Root         string
	MountPoint   string
	Options      string
	Optional     []string // e.g. "shared:1", "master:2"
	FSType       string
	Source       string
	SuperOptions string
}

// ParseMountinfo parses /proc/PID/mountinfo.
func ParseMountinfo(r io.Reader) ([]Mount, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxLine)
	var mounts []Mount
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		m, err := parseMountLine(line)
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		mounts = append(mounts, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return mounts, nil
}

func parseMountLine(line string) (Mount, error) {
	// The kernel separates fields with single spaces and escapes spaces
	// inside fields, so an empty field (e.g. an empty source) is real.
	f := strings.Split(line, " ")
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || len(f) < sep+4 {
		return Mount{}, fmt.Errorf("missing fields: %w", ErrMalformed)
	}
	var m Mount
	var err error
	if m.ID, err = strconv.Atoi(f[0]); err != nil {
		return Mount{}, fmt.Errorf("mount id: %w: %w", ErrMalformed, err)
	}
	if m.ParentID, err = strconv.Atoi(f[1]); err != nil {
		return Mount{}, fmt.Errorf("parent id: %w: %w", ErrMalformed, err)
	}
	maj, min, ok := strings.Cut(f[2], ":")
	if !ok {
		return Mount{}, fmt.Errorf("device %q: %w", f[2], ErrMalformed)
	}
	major, err := strconv.ParseUint(maj, 10, 32)
	if err != nil {
		return Mount{}, fmt.Errorf("device major: %w: %w", ErrMalformed, err)
	}
	minor, err := strconv.ParseUint(min, 10, 32)
	if err != nil {
		return Mount{}, fmt.Errorf("device minor: %w: %w", ErrMalformed, err)
	}
	m.Major, m.Minor = uint32(major), uint32(minor)
	m.Root = unescapeOctal(f[3])
	m.MountPoint = unescapeOctal(f[4])
	m.Options = f[5]
	if sep > 6 {
		m.Optional = f[6:sep]
	}
	m.FSType = f[sep+1]
	m.Source = unescapeOctal(f[sep+2])
	// Super options never contain spaces; anything after is ignored to
	// stay compatible with fields future kernels may append.
	m.SuperOptions = f[sep+3]
	return m, nil
}

// unescapeOctal decodes the kernel's \ooo escapes (space, tab, newline,
// backslash). Invalid sequences are kept literally.
func unescapeOctal(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		// A first digit above 3 would not fit in a byte.
		if s[i] == '\\' && i+3 < len(s) && '0' <= s[i+1] && s[i+1] <= '3' &&
			isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return '0' <= c && c <= '7' }

// Hierarchies locates the cgroup hierarchies of a host.
type Hierarchies struct {
	// V2 is the mount point of the cgroup2 (unified) hierarchy, "" if
	// none.
	V2 string
	// V1 maps each v1 controller, or "name=X" for named hierarchies, to
	// its mount point. Comounted controllers ("cpu,cpuacct") share one.
	V1 map[string]string
}

// FindHierarchies finds the cgroup hierarchies among mounts. When a
// hierarchy is mounted more than once (bind mounts, container views), the
// first mount of its root wins, since only that mount shows every cgroup.
func FindHierarchies(mounts []Mount) Hierarchies {
	var h Hierarchies
	v2Root := false
	v1Root := map[string]bool{}
	for _, m := range mounts {
		isRoot := m.Root == "/"
		switch m.FSType {
		case "cgroup2":
			if h.V2 == "" || (isRoot && !v2Root) {
				h.V2, v2Root = m.MountPoint, isRoot
			}
		case "cgroup":
			for _, opt := range strings.Split(m.SuperOptions, ",") {
				if !isV1Controller(opt) {
					continue
				}
				if h.V1 == nil {
					h.V1 = map[string]string{}
				}
				if _, ok := h.V1[opt]; !ok || (isRoot && !v1Root[opt]) {
					h.V1[opt], v1Root[opt] = m.MountPoint, isRoot
				}
			}
		}
	}
	return h
}

// isV1Controller tells controllers and named hierarchies apart from the
// mount flags that share the super options field.
func isV1Controller(opt string) bool {
	switch opt {
	case "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer",
		"net_cls", "blkio", "perf_event", "net_prio", "hugetlb", "pids",
		"rdma", "misc", "debug":
		return true
	}
	return strings.HasPrefix(opt, "name=") && len(opt) > len("name=")
}

// Mode returns "v2" (unified only), "v1" (legacy only), "hybrid" (both),
// or "" when no cgroup hierarchy is mounted.
func (h Hierarchies) Mode() string {
	switch {
	case h.V2 != "" && len(h.V1) > 0:
		return "hybrid"
	case h.V2 != "":
		return "v2"
	case len(h.V1) > 0:
		return "v1"
	}
	return ""
}

// Preferred returns the hierarchy to read a process's cgroup from when
// identifying its container: controller is "" for the unified hierarchy.
//
// On a pure v2 host there is only the unified hierarchy. On v1 and hybrid
// hosts, runtimes place each container in every v1 controller, whereas the
// unified hierarchy of a hybrid host usually holds everything at its root,
// so a v1 controller is used: pids first (present since 4.3 and attached
// by every runtime), then memory, cpu, and finally systemd's named
// hierarchy. It returns "", "" when nothing is mounted.
func (h Hierarchies) Preferred() (controller, mountpoint string) {
	if len(h.V1) == 0 {
		return "", h.V2
	}
	for _, c := range []string{"pids", "memory", "cpu", "name=systemd"} {
		if mp, ok := h.V1[c]; ok {
			return c, mp
		}
	}
	if h.V2 != "" {
		return "", h.V2
	}
	// Only unusual controllers: pick one deterministically.
	names := make([]string, 0, len(h.V1))
	for c := range h.V1 {
		names = append(names, c)
	}
	sort.Strings(names)
	return names[0], h.V1[names[0]]
}
