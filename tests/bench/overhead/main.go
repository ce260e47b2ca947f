// Command overhead measures what the Harrier sensor costs the workloads it
// watches. For each workload it runs tests/bench/loadgen R times with the
// sensor off and R times with `harrier events --discard --stats` running,
// interleaved (OFF,ON then ON,OFF, alternating by round), and reports
//
//	overhead = benchutil.Median(ON seconds) / benchutil.Median(OFF seconds)
//
// against the project's targets, with the events per second the sensor
// delivered to user space, the events it dropped, and the expected events
// it never submitted (lost). It must run as root. Results go to stdout as a
// markdown table and to -out as JSON.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/harrier-sec/harrier/sensor"
	"github.com/harrier-sec/harrier/tests/bench/internal/benchutil"
)

// lossFreeRate is the delivery rate below which no event may be lost.
const lossFreeRate = 50_000

// workload is one storm loadgen can run.
type workload struct {
	name     string
	defaultN int
	// target is the highest acceptable overhead ratio; 0 means none.
	target float64
	// expectKind names the kernelSubmitted counter that must reach N in
	// every ON run; empty means this workload expects no events.
	expectKind string
}

// allWorkloads lists the workloads in report order. The default sizes make
// one OFF run last about 1–3 s on a 2-vCPU VM.
func allWorkloads() []workload {
	return []workload{
		{name: "exec", defaultN: 1000, target: 1.05, expectKind: "exec"},
		{name: "open-unwatched", defaultN: 300_000, target: 1.05},
		{name: "open-watched", defaultN: 300_000, expectKind: "file_open"},
		{name: "connect", defaultN: 60_000, target: 1.05, expectKind: "connect"},
	}
}

type options struct {
	harrier      string
	loadgen      string
	rounds       int
	warmup       int
	workloads    []workload
	n            map[string]int
	out          string
	settle       time.Duration
	drain        time.Duration
	readyTimeout time.Duration
	stopTimeout  time.Duration
	strict       bool
	// floor keeps the sensor attached but has it report no syscall, to
	// measure what merely hooking the syscalls costs on this kernel.
	floor bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, log)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			log.Error("overhead benchmark failed", "err", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("must run as root: the sensor loads eBPF programs")
	}
	for _, p := range []*string{&o.harrier, &o.loadgen} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return fmt.Errorf("%s: %w", *p, err)
		}
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("%w (build it first, or run tests/bench/overhead.sh)", err)
		}
		*p = abs
	}

	env, err := newBenchEnv()
	if err != nil {
		return err
	}
	defer env.close()
	log.Info("bench environment", "dir", env.dir, "watched", env.watchedDir, "unwatched", env.unwatchedDir, "config", env.configPath)

	report := newReport(o, env)
	if report.SensorIdleCPUSeconds, err = idleSensorCPU(ctx, o, env, log); err != nil {
		return err
	}
	for _, w := range o.workloads {
		res, err := runWorkload(ctx, o, env, w, report.SensorIdleCPUSeconds, log)
		if err != nil {
			return err
		}
		report.Results = append(report.Results, res)
	}
	report.Finished = time.Now().UTC()

	if err := writeTable(stdout, report); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	if err := benchutil.WriteJSON(o.out, report); err != nil {
		return err
	}
	log.Info("results written", "path", o.out)
	if o.strict && !report.allPass() {
		return errors.New("a target was missed (-strict)")
	}
	return nil
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{n: map[string]int{}}
	known := allWorkloads()
	var names []string
	for _, w := range known {
		names = append(names, w.name)
		o.n[w.name] = w.defaultN
	}
	workloadList := strings.Join(names, ",")

	fs := flag.NewFlagSet("overhead", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.harrier, "harrier", "bin/harrier", "path of the harrier binary")
	fs.StringVar(&o.loadgen, "loadgen", "tests/bench/bin/loadgen", "path of the loadgen binary")
	fs.IntVar(&o.rounds, "rounds", 5, "OFF/ON pairs per workload")
	fs.IntVar(&o.warmup, "warmup", 1, "untimed OFF runs per workload before the rounds")
	fs.StringVar(&workloadList, "workloads", workloadList, "comma-separated workloads to run")
	fs.Func("n", "operations per run, as workload=N[,workload=N] (defaults: "+benchutil.FormatCounts(o.n, names)+")", benchutil.CountsFlag(o.n, names, "workload"))
	fs.StringVar(&o.out, "out", "tests/bench/results/overhead.json", "where to write the JSON results")
	fs.DurationVar(&o.settle, "settle", 250*time.Millisecond, "wait after the sensor reports its probes attached, before the storm")
	fs.DurationVar(&o.drain, "drain", 200*time.Millisecond, "wait after the storm before stopping the sensor, so it drains its ring buffer")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 60*time.Second, "how long the sensor may take to attach")
	fs.DurationVar(&o.stopTimeout, "stop-timeout", 30*time.Second, "how long the sensor may take to exit after SIGINT")
	fs.BoolVar(&o.strict, "strict", false, "exit 1 when a workload misses its target or loses events")
	fs.BoolVar(&o.floor, "floor", false, "ON runs keep the syscall hooks attached but report no syscall (the cost floor of the attach point)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.rounds < 1 {
		return o, fmt.Errorf("-rounds %d: must be at least 1", o.rounds)
	}
	if o.warmup < 0 {
		return o, fmt.Errorf("-warmup %d: must not be negative", o.warmup)
	}
	for name := range strings.SplitSeq(workloadList, ",") {
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(known, func(w workload) bool { return w.name == name })
		if i < 0 {
			return o, fmt.Errorf("-workloads: %q: unknown (known: %s)", name, strings.Join(names, ", "))
		}
		if slices.ContainsFunc(o.workloads, func(w workload) bool { return w.name == name }) {
			return o, fmt.Errorf("-workloads: %q listed twice", name)
		}
		o.workloads = append(o.workloads, known[i])
	}
	return o, nil
}

// benchEnv is the scratch directory with the open workloads' directories and
// the sensor config that watches one of them.
type benchEnv struct {
	dir          string
	watchedDir   string
	unwatchedDir string
	configPath   string
	extraWatch   string
}

// newBenchEnv makes a fresh directory under the system temp dir (not covered
// by the default watchPaths) and a config whose watchPaths are the defaults
// plus its watched/ subdirectory.
func newBenchEnv() (*benchEnv, error) {
	dir, err := os.MkdirTemp("", "harrier-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench directory: %w", err)
	}
	dir, err = filepath.EvalSymlinks(dir) // the kernel reports resolved paths
	if err != nil {
		return nil, fmt.Errorf("bench directory: %w", err)
	}
	env := &benchEnv{
		dir:          dir,
		watchedDir:   filepath.Join(dir, "watched"),
		unwatchedDir: filepath.Join(dir, "unwatched"),
		configPath:   filepath.Join(dir, "bench.yaml"),
	}
	env.extraWatch = env.watchedDir + "/"
	for _, d := range []string{env.watchedDir, env.unwatchedDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			env.close()
			return nil, fmt.Errorf("bench directory: %w", err)
		}
	}
	for _, p := range sensor.DefaultWatchPaths() {
		if strings.HasPrefix(env.unwatchedDir+"/", p) {
			env.close()
			return nil, fmt.Errorf("%s is under the default watch path %s: set TMPDIR elsewhere", env.unwatchedDir, p)
		}
	}
	if err := writeSensorConfig(env.configPath, append(sensor.DefaultWatchPaths(), env.extraWatch)); err != nil {
		env.close()
		return nil, err
	}
	return env, nil
}

func (e *benchEnv) close() { _ = os.RemoveAll(e.dir) }

// loadgenArgs are the arguments of one loadgen run of w.
func (e *benchEnv) loadgenArgs(w workload, n int) []string {
	args := []string{"-workload", w.name, "-n", strconv.Itoa(n)}
	switch w.name {
	case "open-unwatched":
		args = append(args, "-dir", e.unwatchedDir)
	case "open-watched":
		args = append(args, "-dir", e.watchedDir)
	}
	return args
}
