// Command uplink measures the agent → backend path with the real pieces:
// the spool on disk (store), the QUIC uplink with mutual TLS over
// 127.0.0.1 (transport, certificates made with its PKI functions) and the
// backend's BadgerStore as the server's Sink. It reports spool append and
// drain throughput, a sustained fixed-rate load, bytes per event on the wire
// and the time to drain an outage's backlog, with the agent side's memory.
//
// Each phase runs in its own process (this binary re-executed with
// -role phase), so peak RSS is per phase; within it the backend runs in a
// further child (-role backend), so the phase's RSS is the agent side alone.
// Results: a markdown table on stdout and JSON in -out. See README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/harrier-sec/harrier/tests/bench/internal/benchutil"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "uplink:", err)
		}
		os.Exit(1)
	}
}

// phaseOrder lists the phases in run order. "quota+memlimit" is "quota"
// again with the soft memory limit set in the agent process.
func phaseOrder() []string {
	return []string{"throughput", "sustained", "outage", "quota", "quota+memlimit"}
}

type options struct {
	role         string
	phases       []string
	phase        string
	dir          string
	pkiDir       string
	phaseDir     string
	storeDir     string
	addr         string
	out          string
	keep         bool
	n            int
	rate         int
	duration     time.Duration
	backlog      int
	quota        int64
	memLimit     int64
	drainTimeout time.Duration
	seed         uint64
	verbose      bool
	cpuProfile   string
	memProfile   string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("uplink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var phases, quota, memLimit string
	fs.StringVar(&phases, "phases", strings.Join(phaseOrder(), ","), "phases to run, comma-separated: "+strings.Join(phaseOrder(), ", "))
	fs.StringVar(&o.dir, "dir", os.TempDir(), "parent of the run's temporary directory (spools, backend stores, certificates)")
	fs.StringVar(&o.out, "out", "tests/bench/results/uplink.json", "JSON results file")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory")
	fs.IntVar(&o.n, "n", 200_000, "throughput: records appended and then drained")
	fs.IntVar(&o.rate, "rate", 20_000, "sustained: append rate, records/s")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "sustained: length of the fixed-rate window")
	fs.IntVar(&o.backlog, "backlog", 360_000, "outage: records appended while no backend runs (360k = 6 min at 1k/s)")
	fs.StringVar(&quota, "quota", "64MiB", "quota phases: spool quota, small enough for the backlog to hit it")
	fs.StringVar(&memLimit, "memlimit", "200MiB", "quota+memlimit phase: debug.SetMemoryLimit in the agent process (0 skips the phase)")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 5*time.Minute, "give up waiting for a drain after this long")
	fs.Uint64Var(&o.seed, "seed", 1, "event generator seed")
	fs.BoolVar(&o.verbose, "v", false, "log at info level (default: warnings)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write each phase's agent-side CPU profile to this path, suffixed .<phase>, and the backend child's to .<phase>.backend")
	fs.StringVar(&o.memProfile, "memprofile", "", "write agent-side heap profiles to this path, suffixed .<phase>.<point> (quota/outage: after the backlog and at the end; others: at the end)")
	// Internal: how the binary re-executes itself.
	fs.StringVar(&o.role, "role", "run", "internal: run | phase | backend")
	fs.StringVar(&o.phase, "phase", "", "internal: the phase a -role phase process runs")
	fs.StringVar(&o.phaseDir, "phase-dir", "", "internal: a phase's directory")
	fs.StringVar(&o.pkiDir, "pki", "", "internal: certificate directory")
	fs.StringVar(&o.storeDir, "store", "", "internal: backend store directory")
	fs.StringVar(&o.addr, "addr", "127.0.0.1:0", "internal: backend UDP address")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	var err error
	if o.quota, err = parseSize(quota); err != nil {
		return o, fmt.Errorf("-quota: %w", err)
	}
	if o.memLimit, err = parseSize(memLimit); err != nil {
		return o, fmt.Errorf("-memlimit: %w", err)
	}
	for p := range strings.SplitSeq(phases, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !slices.Contains(phaseOrder(), p) {
			return o, fmt.Errorf("-phases: unknown phase %q", p)
		}
		if p == "quota+memlimit" && o.memLimit == 0 {
			continue
		}
		o.phases = append(o.phases, p)
	}
	switch {
	case o.n <= 0 || o.rate <= 0 || o.backlog <= 0 || o.duration <= 0:
		return o, errors.New("-n, -rate, -backlog and -duration must be positive")
	case !strings.HasPrefix(o.addr, "127.0.0.1:"):
		return o, errors.New("-addr must be on 127.0.0.1")
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})).With("role", o.role)
	switch o.role {
	case "backend":
		if o.cpuProfile != "" {
			stop, err := startCPUProfile(o.cpuProfile)
			if err != nil {
				return err
			}
			defer stop()
		}
		return runBackend(ctx, o.pkiDir, o.storeDir, o.addr, stdin, stdout, log)
	case "phase":
		return runPhase(ctx, o, stdout, log.With("phase", o.phase))
	case "run":
		return orchestrate(ctx, o, stdout, log)
	}
	return fmt.Errorf("unknown -role %q", o.role)
}

// runPhase runs one phase in this process and writes its result as JSON.
func runPhase(ctx context.Context, o options, stdout io.Writer, log *slog.Logger) error {
	po := phaseOpts{dir: o.phaseDir, pkiDir: o.pkiDir, n: o.n, rate: o.rate, duration: o.duration, backlog: o.backlog,
		drainTimeout: o.drainTimeout, seed: o.seed, verbose: o.verbose}
	if o.cpuProfile != "" {
		po.backendCPUProfile = profilePath(o.cpuProfile, o.phase, "backend")
	}
	if o.memProfile != "" {
		po.heapProfile = func(point string) {
			if err := writeHeapProfile(profilePath(o.memProfile, o.phase, point)); err != nil {
				log.Warn("heap profile", "error", err)
			}
		}
	}
	if o.cpuProfile != "" {
		stop, err := startCPUProfile(profilePath(o.cpuProfile, o.phase, ""))
		if err != nil {
			return err
		}
		defer stop()
	}
	var (
		res any
		err error
	)
	switch o.phase {
	case "throughput":
		res, err = runThroughput(ctx, po, log)
	case "sustained":
		res, err = runSustained(ctx, po, log)
	case "outage":
		res, err = runOutage(ctx, po, log)
	case "quota", "quota+memlimit":
		po.quota = o.quota
		if o.phase == "quota+memlimit" {
			po.memLimit = o.memLimit
			debug.SetMemoryLimit(o.memLimit)
		}
		res, err = runOutage(ctx, po, log)
	default:
		return fmt.Errorf("unknown phase %q", o.phase)
	}
	if err != nil {
		return fmt.Errorf("phase %s: %w", o.phase, err)
	}
	if err := json.NewEncoder(stdout).Encode(res); err != nil {
		return fmt.Errorf("phase %s: write result: %w", o.phase, err)
	}
	return nil
}

// results is the JSON file.
type results struct {
	Started       time.Time         `json:"started"`
	WallSeconds   float64           `json:"wall_seconds"`
	Host          map[string]string `json:"host"`
	Config        map[string]string `json:"config"`
	Throughput    *throughputResult `json:"throughput,omitempty"`
	Sustained     *sustainedResult  `json:"sustained,omitempty"`
	Outage        *outageResult     `json:"outage,omitempty"`
	Quota         *outageResult     `json:"quota,omitempty"`
	QuotaMemLimit *outageResult     `json:"quota_memlimit,omitempty"`
}

func orchestrate(ctx context.Context, o options, stdout io.Writer, log *slog.Logger) error {
	if len(o.phases) == 0 {
		return errors.New("no phases to run")
	}
	start := time.Now()
	base, err := os.MkdirTemp(o.dir, "harrier-uplink-")
	if err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	if o.keep {
		log.Warn("keeping the temporary directory", "dir", base)
	} else {
		defer os.RemoveAll(base)
	}
	pki := filepath.Join(base, "pki")
	if err := makePKI(pki); err != nil {
		return err
	}
	res := &results{
		Started: start.UTC(),
		Host:    hostInfo(),
		Config: map[string]string{
			"n": strconv.Itoa(o.n), "rate": strconv.Itoa(o.rate), "duration": o.duration.String(),
			"backlog": strconv.Itoa(o.backlog), "quota": strconv.FormatInt(o.quota, 10),
			"memlimit": strconv.FormatInt(o.memLimit, 10), "seed": strconv.FormatUint(o.seed, 10), "dir": o.dir,
		},
	}
	for _, p := range o.phases {
		t0 := time.Now()
		fmt.Fprintf(os.Stderr, "uplink: phase %s ...\n", p)
		var dst any
		switch p {
		case "throughput":
			res.Throughput = &throughputResult{}
			dst = res.Throughput
		case "sustained":
			res.Sustained = &sustainedResult{}
			dst = res.Sustained
		case "outage":
			res.Outage = &outageResult{}
			dst = res.Outage
		case "quota":
			res.Quota = &outageResult{}
			dst = res.Quota
		case "quota+memlimit":
			res.QuotaMemLimit = &outageResult{}
			dst = res.QuotaMemLimit
		}
		if err := runPhaseProcess(ctx, o, p, base, dst); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "uplink: phase %s done in %.1fs\n", p, time.Since(t0).Seconds())
	}
	res.WallSeconds = time.Since(start).Seconds()
	writeTable(stdout, res)
	if err := benchutil.WriteJSON(o.out, res); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nJSON: %s\n", o.out)
	return nil
}

// runPhaseProcess re-executes this binary for one phase and decodes its
// result into dst.
func runPhaseProcess(ctx context.Context, o options, phase, base string, dst any) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	dir := filepath.Join(base, strings.ReplaceAll(phase, "+", "-"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("phase directory: %w", err)
	}
	args := []string{"-role", "phase", "-phase", phase, "-phase-dir", dir, "-pki", filepath.Join(base, "pki"),
		"-n", strconv.Itoa(o.n), "-rate", strconv.Itoa(o.rate), "-duration", o.duration.String(),
		"-backlog", strconv.Itoa(o.backlog), "-quota", strconv.FormatInt(o.quota, 10),
		"-memlimit", strconv.FormatInt(o.memLimit, 10), "-drain-timeout", o.drainTimeout.String(),
		"-seed", strconv.FormatUint(o.seed, 10), "-cpuprofile", o.cpuProfile, "-memprofile", o.memProfile}
	if o.verbose {
		args = append(args, "-v")
	}
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("phase %s: %w", phase, err)
	}
	if err := json.Unmarshal(out, dst); err != nil {
		return fmt.Errorf("phase %s: decode result: %w", phase, err)
	}
	// The phase's files are not needed any more; free the disk for the next.
	if !o.keep {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("remove %s: %w", dir, err)
		}
	}
	return nil
}

func hostInfo() map[string]string {
	h := map[string]string{"go": runtime.Version(), "cpus": strconv.Itoa(runtime.NumCPU()), "goarch": runtime.GOARCH}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h["kernel"] = strings.TrimSpace(string(b))
	}
	if name, err := os.Hostname(); err == nil {
		h["hostname"] = name
	}
	return h
}
