package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cilium/ebpf"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/harrier-sec/harrier/agent"
	"github.com/harrier-sec/harrier/sensor"
	"github.com/harrier-sec/harrier/tests/bench/internal/benchutil"
)

// loadgenResult is what loadgen prints.
type loadgenResult struct {
	Workload  string  `json:"workload"`
	N         int     `json:"n"`
	Seconds   float64 `json:"seconds"`
	OpsPerSec float64 `json:"ops_per_sec"`
	// CPU time of the loadgen process, from its rusage.
	userSeconds, sysSeconds float64
}

// runRecord is one timed loadgen run, with the sensor's counters when it was on.
type runRecord struct {
	Round     int     `json:"round"`
	SensorOn  bool    `json:"sensorOn"`
	Seconds   float64 `json:"seconds"`
	OpsPerSec float64 `json:"opsPerSec"`
	// CPU time of the loadgen process (setup included).
	LoadgenUserSeconds float64 `json:"loadgenUserSeconds"`
	LoadgenSysSeconds  float64 `json:"loadgenSysSeconds"`
	// For ON runs only.
	SensorSeconds float64 `json:"sensorSeconds,omitempty"` // sensor start to exit
	// SensorCPUSeconds is harrier's user+system CPU time over its whole
	// life, startup included; in-kernel BPF time is charged to loadgen.
	SensorCPUSeconds float64       `json:"sensorCPUSeconds,omitempty"`
	EventsPerSec     float64       `json:"eventsPerSec,omitempty"` // received / storm seconds
	Dropped          uint64        `json:"dropped,omitempty"`
	Lost             uint64        `json:"lost,omitempty"`
	Stats            *sensor.Stats `json:"stats,omitempty"`
}

// writeSensorConfig writes a harrier config whose sensor section sets
// watchPaths, and loads it back the way harrier will.
func writeSensorConfig(path string, watch []string) error {
	cfg := agent.Config{Sensor: sensor.Config{WatchPaths: watch}}
	b, err := json.MarshalIndent(cfg, "", "  ") // JSON is YAML
	if err != nil {
		return fmt.Errorf("encode sensor config: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write sensor config: %w", err)
	}
	if _, err := agent.LoadConfig(path); err != nil {
		return fmt.Errorf("bench config rejected: %w", err)
	}
	return nil
}

// idleRuns is how many storm-free sensor runs calibrate the sensor's own
// startup and idle CPU time.
const idleRuns = 3

// idleSensorCPU is the median CPU time of an ON run without a storm: start,
// settle, drain, stop. It is subtracted from ON runs' sensor CPU.
func idleSensorCPU(ctx context.Context, o options, env *benchEnv, log *slog.Logger) (float64, error) {
	var cpu []float64
	for i := range idleRuns {
		h, err := startSensor(ctx, o, env.configPath)
		if err != nil {
			return 0, fmt.Errorf("idle sensor run: %w", err)
		}
		sleepErr := benchutil.Sleep(ctx, o.drain)
		_, stopErr := h.stop()
		if err := errors.Join(sleepErr, stopErr); err != nil {
			return 0, fmt.Errorf("idle sensor run: %w", err)
		}
		log.Info("idle sensor run", "run", i+1, "cpu_seconds", round3(h.cpu.Seconds()), "seconds", round3(h.lifetime.Seconds()))
		cpu = append(cpu, h.cpu.Seconds())
	}
	return benchutil.Median(cpu), nil
}

// runWorkload runs w's warm-up and its interleaved OFF/ON rounds.
func runWorkload(ctx context.Context, o options, env *benchEnv, w workload, idleCPU float64, log *slog.Logger) (result, error) {
	n := o.n[w.name]
	args := env.loadgenArgs(w, n)
	for i := range o.warmup {
		lg, err := runLoadgen(ctx, o.loadgen, args)
		if err != nil {
			return result{}, fmt.Errorf("%s warm-up: %w", w.name, err)
		}
		log.Info("warm-up", "workload", w.name, "run", i+1, "seconds", round3(lg.Seconds), "ops_per_sec", round0(lg.OpsPerSec))
	}
	var runs []runRecord
	for r := range o.rounds {
		order := []bool{false, true}
		if r%2 == 1 {
			order = []bool{true, false}
		}
		for _, on := range order {
			rec, err := runOnce(ctx, o, env, w, n, args, on)
			if err != nil {
				return result{}, fmt.Errorf("%s round %d (sensor on: %t): %w", w.name, r+1, on, err)
			}
			rec.Round = r + 1
			attrs := []any{"workload", w.name, "round", r + 1, "sensor_on", on,
				"seconds", round3(rec.Seconds), "ops_per_sec", round0(rec.OpsPerSec)}
			if on {
				attrs = append(attrs, "received", rec.Stats.Received, "events_per_sec", round0(rec.EventsPerSec),
					"dropped", rec.Dropped, "lost", rec.Lost)
			}
			log.Info("run", attrs...)
			runs = append(runs, rec)
		}
	}
	return summarize(w, n, runs, idleCPU), nil
}

// runOnce is one loadgen run, under the sensor when on.
func runOnce(ctx context.Context, o options, env *benchEnv, w workload, n int, args []string, on bool) (runRecord, error) {
	if !on {
		lg, err := runLoadgen(ctx, o.loadgen, args)
		if err != nil {
			return runRecord{}, err
		}
		return runRecord{Seconds: lg.Seconds, OpsPerSec: lg.OpsPerSec,
			LoadgenUserSeconds: lg.userSeconds, LoadgenSysSeconds: lg.sysSeconds}, nil
	}

	h, err := startSensor(ctx, o, env.configPath)
	if err != nil {
		return runRecord{}, err
	}
	if o.floor {
		if err := silenceSyscalls(); err != nil {
			_, stopErr := h.stop()
			return runRecord{}, errors.Join(err, stopErr)
		}
	}
	lg, lgErr := runLoadgen(ctx, o.loadgen, args)
	if lgErr == nil {
		lgErr = benchutil.Sleep(ctx, o.drain)
	}
	stats, stopErr := h.stop()
	if err := errors.Join(lgErr, stopErr); err != nil {
		return runRecord{}, err
	}
	rec := runRecord{
		SensorOn:           true,
		Seconds:            lg.Seconds,
		OpsPerSec:          lg.OpsPerSec,
		SensorSeconds:      h.lifetime.Seconds(),
		SensorCPUSeconds:   h.cpu.Seconds(),
		LoadgenUserSeconds: lg.userSeconds,
		LoadgenSysSeconds:  lg.sysSeconds,
		EventsPerSec:       float64(stats.Received) / lg.Seconds,
		Dropped:            dropped(stats),
		Stats:              &stats,
	}
	if w.expectKind != "" {
		if got := stats.KernelSubmitted[w.expectKind]; got < uint64(n) {
			rec.Lost = uint64(n) - got
		}
	}
	return rec, nil
}

// dropped counts events the sensor lost on the way to its consumer.
func dropped(s sensor.Stats) uint64 {
	total := s.DecodeErrors
	for _, v := range s.KernelRingFull {
		total += v
	}
	for _, v := range s.QueueDropped {
		total += v
	}
	return total
}

// runLoadgen runs loadgen once and decodes its result.
func runLoadgen(ctx context.Context, path string, args []string) (loadgenResult, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return loadgenResult{}, fmt.Errorf("loadgen %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	var res loadgenResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return loadgenResult{}, fmt.Errorf("loadgen output %q: %w", stdout.String(), err)
	}
	if res.Seconds <= 0 {
		return loadgenResult{}, fmt.Errorf("loadgen output %q: no duration", stdout.String())
	}
	res.userSeconds = cmd.ProcessState.UserTime().Seconds()
	res.sysSeconds = cmd.ProcessState.SystemTime().Seconds()
	return res, nil
}

// sensorProc is a running `harrier events --discard --stats`.
type sensorProc struct {
	cmd         *exec.Cmd
	stderr      *lineWriter
	started     time.Time
	lifetime    time.Duration
	cpu         time.Duration
	stopTimeout time.Duration
	exited      <-chan error
}

// startSensor starts harrier and returns once its syscall probes are
// attached and the settle time has passed.
func startSensor(ctx context.Context, o options, configPath string) (*sensorProc, error) {
	lw := newLineWriter(func(line string) bool {
		return strings.Contains(line, `msg="probe attached"`) && strings.Contains(line, "probe=syscalls")
	})
	cmd := exec.CommandContext(ctx, o.harrier, "events", "--discard", "--stats", "-c", configPath)
	cmd.Stderr = lw
	// On cancellation, stop the sensor the way an operator would, so it
	// detaches cleanly; kill it if it does not exit in time.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = o.stopTimeout
	h := &sensorProc{cmd: cmd, stderr: lw, started: time.Now(), stopTimeout: o.stopTimeout}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start harrier: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	timer := time.NewTimer(o.readyTimeout)
	defer timer.Stop()
	select {
	case <-lw.ready:
	case err := <-exited:
		return nil, fmt.Errorf("harrier exited before attaching: %v: %s", err, lw.tail(20))
	case <-timer.C:
		_ = cmd.Process.Kill()
		<-exited
		return nil, fmt.Errorf("harrier not attached after %s: %s", o.readyTimeout, lw.tail(20))
	case <-ctx.Done():
		<-exited
		return nil, fmt.Errorf("waiting for harrier: %w", ctx.Err())
	}
	h.exited = exited
	if err := benchutil.Sleep(ctx, o.settle); err != nil {
		_, stopErr := h.stop()
		return nil, errors.Join(err, stopErr)
	}
	return h, nil
}

// stop sends SIGINT, waits for harrier to exit and returns the counters it
// printed on the way out.
func (h *sensorProc) stop() (sensor.Stats, error) {
	var stats sensor.Stats
	if err := h.cmd.Process.Signal(os.Interrupt); err != nil {
		return stats, fmt.Errorf("stop harrier: %w", err)
	}
	timer := time.NewTimer(h.stopTimeout)
	defer timer.Stop()
	var waitErr error
	select {
	case waitErr = <-h.exited:
	case <-timer.C:
		_ = h.cmd.Process.Kill()
		<-h.exited
		return stats, fmt.Errorf("harrier did not exit within %s of SIGINT: %s", h.stopTimeout, h.stderr.tail(20))
	}
	h.lifetime = time.Since(h.started)
	h.cpu = h.cmd.ProcessState.UserTime() + h.cmd.ProcessState.SystemTime()
	if waitErr != nil {
		return stats, fmt.Errorf("harrier: %w: %s", waitErr, h.stderr.tail(20))
	}
	line, ok := h.stderr.lastJSON()
	if !ok {
		return stats, fmt.Errorf("harrier printed no stats: %s", h.stderr.tail(20))
	}
	if err := json.Unmarshal([]byte(line), &stats); err != nil {
		return stats, fmt.Errorf("harrier stats %q: %w", line, err)
	}
	return stats, nil
}

// lineWriter keeps what harrier writes to stderr, line by line, and closes
// ready at the first line isReady accepts.
type lineWriter struct {
	isReady func(string) bool
	ready   chan struct{}

	mu      sync.Mutex
	partial []byte
	lines   []string
	isSet   bool
}

func newLineWriter(isReady func(string) bool) *lineWriter {
	return &lineWriter{isReady: isReady, ready: make(chan struct{})}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		w.lines = append(w.lines, line)
		if !w.isSet && w.isReady(line) {
			w.isSet = true
			close(w.ready)
		}
	}
	return len(p), nil
}

// lastJSON returns the last complete line that is a JSON object.
func (w *lineWriter) lastJSON() (string, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, l := range slices.Backward(w.lines) {
		if strings.HasPrefix(strings.TrimSpace(l), "{") {
			return l, true
		}
	}
	return "", false
}

// tail returns the last n lines, for error messages.
func (w *lineWriter) tail(n int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	lines := w.lines[max(0, len(w.lines)-n):]
	if len(w.partial) > 0 {
		lines = append(slices.Clip(lines), string(w.partial))
	}
	return strings.Join(lines, "\n")
}

// silenceSyscalls empties the running sensor's syscall table (the BPF map
// "syscall_ids"), so its syscall hooks stay attached but return after one
// lookup. Only one sensor may run during the benchmark.
func silenceSyscalls() error {
	var id ebpf.MapID
	for {
		next, err := ebpf.MapGetNextID(id)
		if err != nil {
			return fmt.Errorf("no BPF map named syscall_ids: is the sensor running? %w", err)
		}
		id = next
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue // gone, or not ours to open
		}
		info, err := m.Info()
		if err != nil || info.Name != "syscall_ids" {
			m.Close()
			continue
		}
		defer m.Close()
		for nr := uint32(0); nr < info.MaxEntries; nr++ {
			if err := m.Put(nr, uint32(0)); err != nil {
				return fmt.Errorf("clear syscall %d: %w", nr, err)
			}
		}
		return nil
	}
}
