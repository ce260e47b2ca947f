package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroup is a v1 (cpu, cpuacct, memory) or v2 cgroup for the agent.
type cgroup struct {
	v1         bool
	dirs       []string
	cpuUsage   func() (time.Duration, error)
	memPeak    func() int64
	oomKills   func() int
	procsFiles []string
}

// cpuHierarchy is where CPU cgroups are made: the v1 cpu controller's
// hierarchy when the memory controller is on v1 (hybrid), else the unified
// one.
func cpuHierarchy() (root string, v1 bool) {
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
		return "/sys/fs/cgroup", false
	}
	if _, err := os.Stat("/sys/fs/cgroup/cpu,cpuacct"); err == nil {
		return "/sys/fs/cgroup/cpu,cpuacct", true
	}
	return "/sys/fs/cgroup/cpu", true
}

// cpuShares is the v1 weight the kubelet derives from a CPU request
// (milliCPU × 1024 / 1000, at least 2).
func cpuShares(cores float64) int { return max(2, int(cores*1024)) }

// cpuWeight is the v2 weight for the same shares (the kubelet's mapping).
func cpuWeight(shares int) int { return 1 + (shares-2)*9999/262142 }

// newCgroup makes the agent's cgroup: quota cores, mem bytes, and with
// requested the weight of a request of cores.
func newCgroup(cores float64, mem int64, requested bool) (*cgroup, error) {
	name := fmt.Sprintf("harrier-budget-%d", os.Getpid())
	quota := strconv.Itoa(int(cores * 100000))
	shares := 1024 // the default weight
	if requested {
		shares = cpuShares(cores)
	}
	if cpuRoot, v1 := cpuHierarchy(); v1 {
		cg := &cgroup{v1: true}
		cpu, memd := filepath.Join(cpuRoot, name), filepath.Join("/sys/fs/cgroup/memory", name)
		acct := filepath.Join("/sys/fs/cgroup/cpuacct", name)
		cg.dirs = []string{cpu, memd}
		if acct != cpu && !strings.Contains(cpu, "cpuacct") {
			cg.dirs = append(cg.dirs, acct)
		}
		for _, d := range cg.dirs {
			if err := os.Mkdir(d, 0o755); err != nil {
				return nil, fmt.Errorf("cgroup: %w", err)
			}
			cg.procsFiles = append(cg.procsFiles, filepath.Join(d, "cgroup.procs"))
		}
		if err := writeAll(map[string]string{
			filepath.Join(cpu, "cpu.cfs_period_us"):          "100000",
			filepath.Join(cpu, "cpu.cfs_quota_us"):           quota,
			filepath.Join(cpu, "cpu.shares"):                 strconv.Itoa(shares),
			filepath.Join(memd, "memory.limit_in_bytes"):     strconv.FormatInt(mem, 10),
			filepath.Join(memd, "memory.max_usage_in_bytes"): "0",
		}); err != nil {
			cg.remove()
			return nil, err
		}
		acctDir := cg.dirs[len(cg.dirs)-1]
		if strings.Contains(cpu, "cpuacct") {
			acctDir = cpu
		}
		cg.cpuUsage = func() (time.Duration, error) {
			n, err := readInt(filepath.Join(acctDir, "cpuacct.usage"))
			return time.Duration(n), err
		}
		cg.memPeak = func() int64 { n, _ := readInt(filepath.Join(memd, "memory.max_usage_in_bytes")); return n }
		cg.oomKills = func() int { return keyedInt(filepath.Join(memd, "memory.oom_control"), "oom_kill") }
		return cg, nil
	}
	d := filepath.Join("/sys/fs/cgroup", name)
	if err := os.Mkdir(d, 0o755); err != nil {
		return nil, fmt.Errorf("cgroup: %w", err)
	}
	cg := &cgroup{dirs: []string{d}, procsFiles: []string{filepath.Join(d, "cgroup.procs")}}
	if err := writeAll(map[string]string{filepath.Join(d, "cpu.max"): quota + " 100000", filepath.Join(d, "cpu.weight"): strconv.Itoa(cpuWeight(shares)),
		filepath.Join(d, "memory.max"): strconv.FormatInt(mem, 10)}); err != nil {
		cg.remove()
		return nil, err
	}
	cg.cpuUsage = func() (time.Duration, error) {
		return time.Duration(keyedInt(filepath.Join(d, "cpu.stat"), "usage_usec")) * time.Microsecond, nil
	}
	cg.memPeak = func() int64 { n, _ := readInt(filepath.Join(d, "memory.peak")); return n }
	cg.oomKills = func() int { return keyedInt(filepath.Join(d, "memory.events"), "oom_kill") }
	return cg, nil
}

// joinWorkloadCgroup moves this process into a new CPU cgroup weighted
// like requests of cores (the node's other pods), beside the agent's; leave
// moves it back and removes the cgroup.
func joinWorkloadCgroup(cores float64) (leave func(), err error) {
	name := fmt.Sprintf("harrier-budget-%d-workload", os.Getpid())
	root, v1 := cpuHierarchy()
	weightFile, weight := "cpu.weight", strconv.Itoa(cpuWeight(cpuShares(cores)))
	if v1 {
		weightFile, weight = "cpu.shares", strconv.Itoa(cpuShares(cores))
	}
	back, err := ownCgroup(v1)
	if err != nil {
		return nil, err
	}
	back = filepath.Join(root, back)
	d := filepath.Join(root, name)
	if err := os.Mkdir(d, 0o755); err != nil {
		return nil, fmt.Errorf("workload cgroup: %w", err)
	}
	self := strconv.Itoa(os.Getpid())
	if err := writeAll(map[string]string{filepath.Join(d, weightFile): weight}); err != nil {
		_ = syscall.Rmdir(d)
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(self), 0o644); err != nil {
		_ = syscall.Rmdir(d)
		return nil, fmt.Errorf("workload cgroup: %w", err)
	}
	return func() {
		if err := os.WriteFile(filepath.Join(back, "cgroup.procs"), []byte(self), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "budget: leaving %s: %v\n", d, err)
		}
		(&cgroup{dirs: []string{d}}).remove()
	}, nil
}

// ownCgroup is this process's cgroup path: in the v1 cpu hierarchy, or the
// unified one.
func ownCgroup(v1 bool) (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("own cgroup: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if !v1 && parts[0] == "0" && parts[1] == "" || v1 && slices.Contains(strings.Split(parts[1], ","), "cpu") {
			return parts[2], nil
		}
	}
	return "", fmt.Errorf("own cgroup: no %s line in /proc/self/cgroup", map[bool]string{true: "cpu", false: "unified"}[v1])
}

func (c *cgroup) remove() {
	for _, d := range c.dirs {
		for i := 0; i < 50; i++ {
			if err := syscall.Rmdir(d); err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func writeAll(files map[string]string) error {
	for f, v := range files {
		if err := os.WriteFile(f, []byte(v), 0o644); err != nil {
			return fmt.Errorf("cgroup %s: %w", f, err)
		}
	}
	return nil
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

func keyedInt(path, key string) int {
	b, _ := os.ReadFile(path)
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == key {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}
