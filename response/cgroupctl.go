package response

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Container actions, through the container's cgroup v2 core files: the
// kernel's own freezer and kill, as `runc pause` and `runc kill` use them.
const (
	// ActionPauseContainer freezes every process of the container; the
	// operator thaws (cgroup.freeze 0) or stops it after looking.
	ActionPauseContainer = "pause-container"
	// ActionStopContainer kills every process of the container at once
	// (cgroup.kill); an orchestrator restarts it per its policy.
	ActionStopContainer = "stop-container"
)

// containerCgroup is the alert's container's cgroup in the unified
// hierarchy mounted at v2.
func containerCgroup(v2, cgroupPath string) (string, error) {
	if cgroupPath == "" {
		return "", fmt.Errorf("the alert's container has no cgroup path")
	}
	cg := filepath.Join(v2, filepath.Clean("/"+cgroupPath))
	if cg == filepath.Clean(v2) {
		return "", fmt.Errorf("refusing the root cgroup (the whole host)")
	}
	if fi, err := os.Stat(cg); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("the container's cgroup is not in the unified hierarchy: %v", err)
	}
	return cg, nil
}

// writeCgroupFile writes value to one of cgroup's core files.
func writeCgroupFile(cg, file, value string) error {
	if err := os.WriteFile(filepath.Join(cg, file), []byte(value), 0); err != nil {
		return fmt.Errorf("%s of %s: %w", file, cg, err)
	}
	return nil
}

// frozen reads cgroup.events' frozen field.
func frozen(cg string) bool {
	b, err := os.ReadFile(filepath.Join(cg, "cgroup.events"))
	return err == nil && strings.Contains(string(b), "frozen 1")
}
