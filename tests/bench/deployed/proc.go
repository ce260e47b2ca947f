package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/tests/bench/internal/benchutil"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat; it
// is 100 on every Linux architecture Harrier supports.
const clockTicks = 100

// procCPU is the user+system CPU time of a process (all its threads, live
// and exited) or of a kernel thread, from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu of pid %d: %w", pid, err)
	}
	// The command name is in parentheses and may hold spaces: the fields
	// counted start after the last ')'. utime and stime are fields 14 and
	// 15, so the 12th and 13th after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("cpu of pid %d: malformed stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("cpu of pid %d: short stat", pid)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("cpu of pid %d: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// cpuOf sums procCPU over pids.
func cpuOf(pids []int) (time.Duration, error) {
	var total time.Duration
	for _, p := range pids {
		c, err := procCPU(p)
		if err != nil {
			return 0, err
		}
		total += c
	}
	return total, nil
}

// memory is a process's resident set now and its high-water mark, in bytes.
type memory struct {
	RSS  int64 `json:"rssBytes"`
	Peak int64 `json:"peakRSSBytes"`
}

// procMemory reads VmRSS and VmHWM from /proc/PID/status.
func procMemory(pid int) (memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, fmt.Errorf("memory of pid %d: %w", pid, err)
	}
	defer f.Close()
	var m memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return memory{}, fmt.Errorf("memory of pid %d: %s: %w", pid, k, err)
		}
		if k == "VmRSS" {
			m.RSS = kb << 10
		} else {
			m.Peak = kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return memory{}, fmt.Errorf("memory of pid %d: %w", pid, err)
	}
	return m, nil
}

// findKernelThread returns the PID of the kernel thread named comm (kauditd).
func findKernelThread(comm string) (int, error) {
	paths, err := filepath.Glob("/proc/[0-9]*/comm")
	if err != nil {
		return 0, err
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || strings.TrimSpace(string(b)) != comm {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err == nil {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no %s thread", comm)
}

// waitQuiet waits until the processes' CPU time grows by less than
// quietCPU over one quietWindow, at least min and at most max: a monitor
// still catching up with a storm keeps working after it.
func waitQuiet(ctx context.Context, pids []int, minWait, maxWait time.Duration) error {
	const (
		quietWindow = 200 * time.Millisecond
		quietCPU    = 20 * time.Millisecond // 10 % of one CPU, two clock ticks
	)
	start := time.Now()
	if err := benchutil.Sleep(ctx, minWait); err != nil {
		return err
	}
	prev, err := cpuOf(pids)
	if err != nil {
		return err
	}
	for time.Since(start) < maxWait {
		if err := benchutil.Sleep(ctx, quietWindow); err != nil {
			return err
		}
		now, err := cpuOf(pids)
		if err != nil {
			return err
		}
		if now-prev < quietCPU {
			return nil
		}
		prev = now
	}
	return nil
}

// httpGet fetches url (on 127.0.0.1) and returns its status and body.
func httpGet(ctx context.Context, url string) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// metricSum adds up every sample of the Prometheus metric name in a text
// exposition (all label sets).
func metricSum(body []byte, name string) float64 {
	var sum float64
	for line := range strings.SplitSeq(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum += v
		}
	}
	return sum
}
