package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// memLimitShare is the part of the cgroup's memory limit the Go heap may
// target: the rest is for Badger's mapped tables, the BPF ring buffer's
// pages counted against the cgroup, stacks and the runtime itself.
const (
	memLimitShareNum = 80
	memLimitShareDen = 100
)

// noLimit is what cgroup v1 reports for "unlimited" (a page-rounded MaxInt64).
const noLimit = int64(1) << 62

// ApplyMemoryLimit sets the Go runtime's soft memory limit from the memory
// limit of the cgroup the process runs in (a DaemonSet's resources.limits, or
// systemd's MemoryMax), unless GOMEMLIMIT is set. It returns the limit it set
// (0 when there is none) and where it came from.
func ApplyMemoryLimit(root string) (int64, string, error) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0, "GOMEMLIMIT", nil
	}
	if root == "" {
		root = "/"
	}
	limit, source, err := cgroupMemoryLimit(root, filepath.Join(root, "proc/self/cgroup"))
	if err != nil || limit <= 0 {
		return 0, source, err
	}
	goLimit := limit / memLimitShareDen * memLimitShareNum
	debug.SetMemoryLimit(goLimit)
	return goLimit, source, nil
}

// cgroupMemoryLimit finds the tightest memory limit on the path from the
// process's cgroup up to the root, in cgroup v2 (unified, also mounted at
// /sys/fs/cgroup/unified on hybrid hosts) and in v1's memory controller.
// Inside a container's cgroup namespace the path is "/" and the limit sits at
// the mount's root, which the walk reaches too.
func cgroupMemoryLimit(root, procCgroup string) (int64, string, error) {
	f, err := os.Open(procCgroup)
	if err != nil {
		return 0, "", fmt.Errorf("memory limit: %w", err)
	}
	defer f.Close()
	type candidate struct{ dir, file string }
	var cands []candidate
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			for _, mount := range []string{"sys/fs/cgroup", "sys/fs/cgroup/unified"} {
				cands = append(cands, candidate{filepath.Join(root, mount, parts[2]), "memory.max"})
			}
		case hasController(parts[1], "memory"):
			cands = append(cands, candidate{filepath.Join(root, "sys/fs/cgroup/memory", parts[2]), "memory.limit_in_bytes"})
		}
	}
	if err := sc.Err(); err != nil {
		return 0, "", fmt.Errorf("memory limit: %w", err)
	}
	best, source := int64(0), ""
	mountRoot := filepath.Join(root, "sys/fs/cgroup")
	for _, c := range cands {
		for dir := c.dir; strings.HasPrefix(dir, mountRoot); dir = filepath.Dir(dir) {
			v, err := readLimit(filepath.Join(dir, c.file))
			if err != nil {
				return 0, "", err
			}
			if v > 0 && (best == 0 || v < best) {
				best, source = v, filepath.Join(dir, c.file)
			}
			if dir == mountRoot {
				break
			}
		}
	}
	return best, source, nil
}

func hasController(list, want string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == want {
			return true
		}
	}
	return false
}

// readLimit reads a limit file: 0 for "max", absent files and v1's unlimited.
func readLimit(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("memory limit: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("memory limit %s: %q: %w", path, s, err)
	}
	if v >= noLimit {
		return 0, nil
	}
	return v, nil
}
