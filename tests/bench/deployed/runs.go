package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/tests/bench/internal/benchutil"
)

// runRecord is one storm under one monitor.
type runRecord struct {
	Storm   string `json:"storm"`
	Monitor string `json:"monitor"`
	Round   int    `json:"round"`
	// Seconds is the storm's wall time (loadgen's own timing, or ab's).
	Seconds   float64 `json:"seconds"`
	OpsPerSec float64 `json:"opsPerSec"`
	P99Ms     float64 `json:"p99Ms,omitempty"`
	// WorkloadCPUSeconds is loadgen's user+system time (its reaped children
	// included), or ab's plus nginx's master and workers' over the storm.
	// In-kernel monitor work (BPF programs, audit rules) lands here.
	WorkloadCPUSeconds float64 `json:"workloadCPUSeconds"`
	// MonitorCPUSeconds is the monitor's processes' user+system time from
	// just before the storm until they were quiet after it (DrainSeconds).
	MonitorCPUSeconds float64 `json:"monitorCPUSeconds"`
	DrainSeconds      float64 `json:"drainSeconds,omitempty"`
	// The monitor's memory (the agent's, not its backend's): before the
	// storm, at its end, and its high-water mark over the run.
	IdleRSS        int64 `json:"idleRSSBytes,omitempty"`
	StormRSS       int64 `json:"stormRSSBytes,omitempty"`
	PeakRSS        int64 `json:"peakRSSBytes,omitempty"`
	BackendRSS     int64 `json:"backendRSSBytes,omitempty"`
	BackendPeakRSS int64 `json:"backendPeakRSSBytes,omitempty"`
	// Dropped is what the agent's sensor dropped (kernel ring buffer full
	// plus queue drops), from its metrics; agent and run only.
	Dropped *float64 `json:"dropped,omitempty"`
}

// totalCPU is the workload's CPU time plus the monitor's.
func (r runRecord) totalCPU() float64 { return r.WorkloadCPUSeconds + r.MonitorCPUSeconds }

// runStorm runs one untimed warm-up without a monitor, then the rounds;
// with -profile, one profiled run per harrier monitor.
func (b *bench) runStorm(ctx context.Context, s storm) ([]runRecord, error) {
	var ngx *nginxServer
	if s.isNginx() {
		var err error
		if ngx, err = startNginx(ctx, b.dir, b.o); err != nil {
			return nil, err
		}
		defer func() {
			if err := ngx.stop(); err != nil {
				b.log.Warn("nginx stop", "err", err)
			}
		}()
	}
	warm, err := b.storm(ctx, s, ngx, b.dir)
	if err != nil {
		return nil, fmt.Errorf("%s warm-up: %w", s.Name, err)
	}
	b.log.Info("warm-up", "storm", s.Name, "seconds", round3(warm.Seconds), "ops_per_sec", math.Round(warm.OpsPerSec))

	var runs []runRecord
	m := len(b.o.monitors)
	for r := range b.o.rounds {
		for i := range m {
			mon := b.o.monitors[(i+r)%m]
			rec, err := b.runOnce(ctx, s, mon, ngx, "")
			if err != nil {
				return nil, fmt.Errorf("%s round %d, monitor %s: %w", s.Name, r+1, mon, err)
			}
			rec.Round = r + 1
			b.log.Info("run", "storm", s.Name, "round", r+1, "monitor", mon, "seconds", round3(rec.Seconds),
				"ops_per_sec", math.Round(rec.OpsPerSec), "p99_ms", rec.P99Ms, "workload_cpu", round3(rec.WorkloadCPUSeconds),
				"monitor_cpu", round3(rec.MonitorCPUSeconds), "drain", round3(rec.DrainSeconds), "rss_mib", mib(rec.StormRSS))
			runs = append(runs, rec)
		}
	}
	if b.o.profileDir != "" {
		for _, mon := range b.o.monitors {
			if !isHarrier(mon) {
				continue
			}
			path := filepath.Join(b.o.profileDir, s.Name+"-"+mon+".pprof")
			if _, err := b.runOnce(ctx, s, mon, ngx, path); err != nil {
				return nil, fmt.Errorf("%s profile run, monitor %s: %w", s.Name, mon, err)
			}
			b.log.Info("profile written", "storm", s.Name, "monitor", mon, "path", path)
		}
	}
	return runs, nil
}

func isHarrier(mon string) bool { return mon == monAgent || mon == monRun || mon == monEvents }

// startMonitor starts mon (not none) with its files in dir.
func (b *bench) startMonitor(ctx context.Context, mon, dir, profile string) (*running, error) {
	if mon == monAuditd {
		return b.startAuditd(ctx, dir)
	}
	return b.startHarrier(ctx, mon, dir, profile)
}

// runOnce is one storm under mon: start the monitor, let it settle, run the
// storm, wait until the monitor is quiet, read its CPU time and memory, and
// stop it.
func (b *bench) runOnce(ctx context.Context, s storm, mon string, ngx *nginxServer, profile string) (rec runRecord, err error) {
	rec = runRecord{Storm: s.Name, Monitor: mon}
	if mon == monNone {
		res, err := b.storm(ctx, s, ngx, b.dir)
		if err != nil {
			return rec, err
		}
		res.Storm, res.Monitor = s.Name, mon
		return res, nil
	}
	dir, err := os.MkdirTemp(b.dir, s.Name+"-"+mon+"-")
	if err != nil {
		return rec, fmt.Errorf("run directory: %w", err)
	}
	defer os.RemoveAll(dir)
	r, err := b.startMonitor(ctx, mon, dir, profile)
	if err != nil {
		return rec, err
	}
	defer func() {
		if serr := r.stop(); serr != nil {
			err = errors.Join(err, fmt.Errorf("stop %s: %w", mon, serr))
		}
	}()
	if err := waitQuiet(ctx, r.cpuPIDs, b.o.settle, b.o.maxQuiet); err != nil {
		return rec, err
	}
	idle, err := procMemory(r.memPID)
	if err != nil {
		return rec, err
	}
	cpu0, err := cpuOf(r.cpuPIDs)
	if err != nil {
		return rec, err
	}
	res, err := b.storm(ctx, s, ngx, dir)
	if err != nil {
		return rec, err
	}
	end, err := procMemory(r.memPID)
	if err != nil {
		return rec, err
	}
	drainStart := time.Now()
	if err := waitQuiet(ctx, r.cpuPIDs, b.o.drain, b.o.maxQuiet); err != nil {
		return rec, err
	}
	drain := time.Since(drainStart)
	cpu1, err := cpuOf(r.cpuPIDs)
	if err != nil {
		return rec, err
	}
	final, err := procMemory(r.memPID)
	if err != nil {
		return rec, err
	}
	res.Storm, res.Monitor = s.Name, mon
	res.MonitorCPUSeconds = (cpu1 - cpu0).Seconds()
	res.DrainSeconds = drain.Seconds()
	res.IdleRSS, res.StormRSS, res.PeakRSS = idle.RSS, end.RSS, final.Peak
	if r.backendPID != 0 {
		if bm, err := procMemory(r.backendPID); err == nil {
			res.BackendRSS, res.BackendPeakRSS = bm.RSS, bm.Peak
		}
	}
	if r.metrics != "" {
		if code, body, err := httpGet(ctx, r.metrics+"/metrics"); err == nil && code == 200 {
			d := metricSum(body, "harrier_sensor_kernel_ring_full_total") + metricSum(body, "harrier_sensor_queue_dropped_total")
			res.Dropped = &d
		}
	}
	return res, nil
}

// storm runs s once: loadgen, or ab against nginx (whose CPU time over the
// storm counts as the workload's).
func (b *bench) storm(ctx context.Context, s storm, ngx *nginxServer, dir string) (runRecord, error) {
	if !s.isNginx() {
		return b.loadgen(ctx, s)
	}
	cpu0, err := cpuOf(ngx.pids)
	if err != nil {
		return runRecord{}, err
	}
	ab, err := runAB(ctx, b.o, ngx.url, dir)
	if err != nil {
		return runRecord{}, err
	}
	cpu1, err := cpuOf(ngx.pids)
	if err != nil {
		return runRecord{}, err
	}
	return runRecord{Seconds: ab.Seconds, OpsPerSec: ab.RPS, P99Ms: ab.P99Ms,
		WorkloadCPUSeconds: ab.CPUSecond + (cpu1 - cpu0).Seconds()}, nil
}

// loadgen runs one loadgen storm.
func (b *bench) loadgen(ctx context.Context, s storm) (runRecord, error) {
	args := []string{"-workload", s.workload, "-n", strconv.Itoa(b.o.n[s.Name])}
	if s.file != "" {
		args = append(args, "-file", s.file)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, b.o.loadgen, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return runRecord{}, fmt.Errorf("loadgen %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	var res struct {
		Seconds   float64 `json:"seconds"`
		OpsPerSec float64 `json:"ops_per_sec"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil || res.Seconds <= 0 {
		return runRecord{}, fmt.Errorf("loadgen output %q: %v", stdout.String(), err)
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return runRecord{Seconds: res.Seconds, OpsPerSec: res.OpsPerSec, WorkloadCPUSeconds: cpu.Seconds()}, nil
}

// idleProfiles writes one CPU profile per harrier monitor of a run without
// a storm (start, settle, idleProfileTime, stop): the base to subtract from
// a storm's profile (go tool pprof -diff_base).
func (b *bench) idleProfiles(ctx context.Context) error {
	const idleProfileTime = 3 * time.Second
	for _, mon := range b.o.monitors {
		if !isHarrier(mon) {
			continue
		}
		dir, err := os.MkdirTemp(b.dir, "idle-"+mon+"-")
		if err != nil {
			return fmt.Errorf("run directory: %w", err)
		}
		path := filepath.Join(b.o.profileDir, "idle-"+mon+".pprof")
		r, err := b.startMonitor(ctx, mon, dir, path)
		if err != nil {
			return fmt.Errorf("idle profile of %s: %w", mon, err)
		}
		werr := waitQuiet(ctx, r.cpuPIDs, b.o.settle, b.o.maxQuiet)
		if werr == nil {
			werr = benchutil.Sleep(ctx, idleProfileTime)
		}
		if err := errors.Join(werr, r.stop()); err != nil {
			return fmt.Errorf("idle profile of %s: %w", mon, err)
		}
		_ = os.RemoveAll(dir)
		b.log.Info("profile written", "monitor", mon, "path", path)
	}
	return nil
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

func mib(b int64) float64 { return math.Round(float64(b)/(1<<20)*10) / 10 }
