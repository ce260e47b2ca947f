package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
)

// memSample is this process's memory at one moment. RSS figures come from
// /proc/self/status (kernel accounting, everything the process maps), heap
// figures from the Go runtime.
type memSample struct {
	VmRSS     uint64 `json:"vm_rss"`
	VmHWM     uint64 `json:"vm_hwm"`
	RssAnon   uint64 `json:"rss_anon"`
	RssFile   uint64 `json:"rss_file"`
	HeapInuse uint64 `json:"heap_inuse"`
	HeapAlloc uint64 `json:"heap_alloc"`
	Sys       uint64 `json:"go_sys"`
}

func readMem() (memSample, error) {
	var m memSample
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return m, fmt.Errorf("read memory status: %w", err)
	}
	defer f.Close()
	want := map[string]*uint64{"VmRSS:": &m.VmRSS, "VmHWM:": &m.VmHWM, "RssAnon:": &m.RssAnon, "RssFile:": &m.RssFile}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		if p, ok := want[fields[0]]; ok {
			kb, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return m, fmt.Errorf("parse %s: %w", fields[0], err)
			}
			*p = kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("read memory status: %w", err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.HeapInuse, m.HeapAlloc, m.Sys = ms.HeapInuse, ms.HeapAlloc, ms.Sys
	return m, nil
}

// resetHWM resets VmHWM to the current RSS (clear_refs 5), so a phase's
// peak is its own. Failure is not fatal: the peak then covers the process.
func resetHWM() error {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return fmt.Errorf("reset VmHWM: %w", err)
	}
	return nil
}

// diskUsage sums the allocated blocks (not apparent sizes: Badger's files
// are sparse) of every regular file under dir.
func diskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && path != dir {
				return nil // removed by compaction while we walked
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			total += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("disk usage of %s: %w", dir, err)
	}
	return total, nil
}

const mib = 1 << 20

func mibOf(b uint64) float64 { return float64(b) / mib }

// parseSize reads 64MiB, 1GiB, 512KiB or a plain byte count.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a byte count with an optional KiB/MiB/GiB suffix", s)
	}
	return n * mult, nil
}

// profilePath is base suffixed with the phase ("+" spelled "-") and, if
// given, the point in the phase.
func profilePath(base, phase, point string) string {
	p := base + "." + strings.ReplaceAll(phase, "+", "-")
	if point != "" {
		p += "." + point
	}
	return p
}

// writeHeapProfile writes the live heap (after a GC) to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("heap profile %s: %w", path, err)
	}
	return f.Close()
}

// startCPUProfile profiles the process's CPU into path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile %s: %w", path, err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// rssByMapping splits this process's resident memory by what is mapped:
// Badger's table files (sst), value log (vlog), memtable logs (mem), other
// files (the binary, libraries), and anonymous memory (the Go heap, stacks,
// runtime). From /proc/self/smaps.
func rssByMapping() (map[string]uint64, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return nil, fmt.Errorf("read smaps: %w", err)
	}
	defer f.Close()
	out := map[string]uint64{}
	kind := "anon"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") { // a mapping's header line
			kind = "anon"
			if len(fields) >= 6 && strings.HasPrefix(fields[5], "/") {
				switch filepath.Ext(fields[5]) {
				case ".sst", ".vlog", ".mem":
					kind = filepath.Ext(fields[5])[1:]
				default:
					kind = "other files"
				}
			}
			continue
		}
		if fields[0] == "Rss:" && len(fields) >= 2 {
			kb, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("parse smaps Rss: %w", err)
			}
			out[kind] += kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read smaps: %w", err)
	}
	return out, nil
}
