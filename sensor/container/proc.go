package container

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/harrier-sec/harrier/internal/mountinfo"
)

// CgroupEntry is one line of /proc/PID/cgroup.
type CgroupEntry struct {
	// HierarchyID is 0 for the unified (v2) hierarchy.
	HierarchyID int
	// Controllers is empty for the unified hierarchy; named v1
	// hierarchies appear as "name=X".
	Controllers []string
	Path        string
}

// ParseProcCgroup parses /proc/PID/cgroup ("hierarchy-ID:controllers:path").
// The " (deleted)" suffix the kernel appends for removed v2 cgroups is
// dropped so the path can be matched.
func ParseProcCgroup(r io.Reader) ([]CgroupEntry, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1024), mountinfo.MaxLine)
	var entries []CgroupEntry
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		// The path may itself contain ':' (containerd's systemd form),
		// so only the first two colons separate fields.
		idStr, rest, ok1 := strings.Cut(line, ":")
		ctrls, path, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("cgroup line %d: %w", n, ErrMalformed)
		}
		id, err := strconv.Atoi(idStr)
		if err != nil || id < 0 {
			return nil, fmt.Errorf("cgroup line %d: hierarchy id %q: %w", n, idStr, ErrMalformed)
		}
		e := CgroupEntry{HierarchyID: id, Path: strings.TrimSuffix(path, " (deleted)")}
		if ctrls != "" {
			e.Controllers = strings.Split(ctrls, ",")
		}
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read cgroup file: %w", err)
	}
	return entries, nil
}

// ResolvePID reads <procRoot>/<pid>/cgroup and resolves the process's
// container from the entry of h's preferred hierarchy. If that entry names
// no container, any other entry that does is used, since runtimes may
// skip a controller (e.g. one the kernel lacks). Errors from opening the
// file wrap fs.ErrNotExist when the process has exited.
func ResolvePID(procRoot string, pid int, h Hierarchies) (Info, error) {
	name := filepath.Join(procRoot, strconv.Itoa(pid), "cgroup")
	f, err := os.Open(name)
	if err != nil {
		return Info{}, fmt.Errorf("resolve pid %d: %w", pid, err)
	}
	defer f.Close()
	entries, err := ParseProcCgroup(f)
	if err != nil {
		return Info{}, fmt.Errorf("resolve pid %d: %s: %w", pid, name, err)
	}
	if len(entries) == 0 {
		return Info{}, fmt.Errorf("resolve pid %d: %s: no entries: %w", pid, name, ErrMalformed)
	}
	ctrl, _ := h.Preferred()
	pref := -1
	for i, e := range entries {
		if (ctrl == "" && e.HierarchyID == 0 && len(e.Controllers) == 0) ||
			(ctrl != "" && slices.Contains(e.Controllers, ctrl)) {
			pref = i
			break
		}
	}
	var prefInfo Info
	if pref >= 0 {
		prefInfo = ParseCgroupPath(entries[pref].Path)
		if prefInfo.InContainer() {
			return prefInfo, nil
		}
	}
	for i, e := range entries {
		if i == pref {
			continue
		}
		if info := ParseCgroupPath(e.Path); info.InContainer() {
			return info, nil
		}
	}
	if pref < 0 {
		// The preferred hierarchy is missing from the file; report the
		// first entry so Cgroup and PodUID are still filled.
		prefInfo = ParseCgroupPath(entries[0].Path)
	}
	return prefInfo, nil
}
