// Command deployed measures what Harrier costs a node as it is deployed:
// `harrier agent` with the default config and a `harrier backend` on
// loopback (QUIC, mutual TLS), and the all-in-one `harrier run`, side by side
// in one run with no monitor, with Debian's auditd loaded with comparable
// rules, and with `harrier events --discard` (the sensor alone). For each
// storm it runs every monitor once per round, in an order that rotates each
// round, and reports medians: the storm's wall time and its total CPU time
// (the workload's plus the monitor's own: agent and backend, or auditd and
// kauditd) against no monitor, nginx's requests/s and p99 latency under ab,
// and the monitor's memory. It must run as root; it only uses 127.0.0.1,
// writes only under its temporary directory and -out, and leaves the audit
// configuration as it found it. Run it with tests/bench/deployed.sh.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/harrier-sec/harrier/sensor"
	"github.com/harrier-sec/harrier/tests/bench/internal/benchutil"
)

// storm is one workload every monitor faces.
type storm struct {
	Name  string `json:"name"`
	Label string `json:"label"`
	// workload and file are loadgen's -workload and -file; nginx storms
	// have no workload.
	workload string
	file     string
	defaultN int
	// Targets for harrier agent and run; 0 means none. wall and cpu are the
	// highest ratios against no monitor; rps the lowest requests/s ratio,
	// p99 the highest latency ratio.
	Wall float64 `json:"wallTarget,omitempty"`
	CPU  float64 `json:"cpuTarget,omitempty"`
	RPS  float64 `json:"rpsTarget,omitempty"`
	P99  float64 `json:"p99Target,omitempty"`
}

func (s storm) isNginx() bool { return s.workload == "" }

// Memory targets for harrier agent and run, from issue 22.
const (
	idleRSSTarget  = 64 << 20
	stormRSSTarget = 150 << 20
)

// allStorms lists the storms in report order. The default sizes make one
// run without a monitor last about 1–2 s on a 2-vCPU VM.
func allStorms(watched string) []storm {
	return []storm{
		{Name: "exec", Label: "fork+exec+wait of /bin/true", workload: "exec", defaultN: 1000, Wall: 1.05, CPU: 1.10},
		{Name: "open-etc", Label: "open+close of an unwatched file in /etc (/etc/debian_version)", workload: "open-unwatched", file: "/etc/debian_version", defaultN: 300_000},
		{Name: "open-usrlib", Label: "open+close of an unwatched file in /usr/lib (/usr/lib/os-release)", workload: "open-unwatched", file: "/usr/lib/os-release", defaultN: 300_000},
		{Name: "open-proc", Label: "open+close of /proc/uptime", workload: "open-unwatched", file: "/proc/uptime", defaultN: 200_000},
		{Name: "open-watched", Label: "open+close of a watched file (" + watched + ")", workload: "open-watched", file: watched, defaultN: 100_000, Wall: 1.30},
		{Name: "connect", Label: "TCP connect+accept+close on 127.0.0.1", workload: "connect", defaultN: 40_000, Wall: 1.05},
		{Name: "nginx", Label: "Debian's nginx, 4 KiB static file, ab without keep-alive", defaultN: 20_000, RPS: 0.97, P99: 1.05},
	}
}

type options struct {
	harrier, loadgen, nginx, ab string
	rounds                      int
	monitors                    []string
	storms                      []storm
	n                           map[string]int
	abConcurrency               int
	watchedFile                 string
	out                         string
	profileDir                  string
	settle, drain, maxQuiet     time.Duration
	readyTimeout, stopTimeout   time.Duration
	strict                      bool
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, log)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			log.Error("as-deployed benchmark failed", "err", err)
		}
		os.Exit(1)
	}
}

// bench is one benchmark run's state.
type bench struct {
	o     options
	dir   string
	log   *slog.Logger
	audit *auditState
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) (err error) {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("must run as root: the monitors load eBPF programs and audit rules")
	}
	if err := o.resolveTools(); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "harrier-deployed-")
	if err != nil {
		return fmt.Errorf("bench directory: %w", err)
	}
	defer os.RemoveAll(dir)
	// nginx's workers (nobody) read the served file under it.
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("bench directory: %w", err)
	}
	b := &bench{o: o, dir: dir, log: log}
	if slices.Contains(o.monitors, monAuditd) {
		if b.audit, err = saveAuditState(ctx); err != nil {
			return fmt.Errorf("auditd: %w", err)
		}
		log.Info("audit configuration saved", "rules", len(b.audit.rules), "enabled", b.audit.enabled)
		defer func() {
			if rerr := b.audit.restore(context.WithoutCancel(ctx)); rerr != nil {
				err = errors.Join(err, fmt.Errorf("restore audit configuration: %w", rerr))
				return
			}
			auditLog(log, b.audit)
		}()
	}
	log.Info("as-deployed benchmark", "dir", dir, "monitors", o.monitors, "rounds", o.rounds)

	rep := newReport(o)
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return fmt.Errorf("profile directory: %w", err)
		}
		if err := b.idleProfiles(ctx); err != nil {
			return err
		}
	}
	for _, s := range o.storms {
		runs, err := b.runStorm(ctx, s)
		if err != nil {
			return err
		}
		rep.add(s, runs)
	}
	rep.Finished = time.Now().UTC()
	if err := writeTable(stdout, rep); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	if err := benchutil.WriteJSON(o.out, rep); err != nil {
		return err
	}
	log.Info("results written", "path", o.out)
	if o.strict && !rep.allPass() {
		return errors.New("a target was missed (-strict)")
	}
	return nil
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{n: map[string]int{}}
	fs := flag.NewFlagSet("deployed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.harrier, "harrier", "bin/harrier", "path of the harrier binary")
	fs.StringVar(&o.loadgen, "loadgen", "tests/bench/bin/loadgen", "path of the loadgen binary")
	fs.StringVar(&o.nginx, "nginx", "/usr/sbin/nginx", "path of Debian's nginx")
	fs.StringVar(&o.ab, "ab", "/usr/bin/ab", "path of ApacheBench (apache2-utils)")
	fs.IntVar(&o.rounds, "rounds", 5, "runs per monitor and storm; each round runs every monitor once, in a rotated order")
	monitorList := strings.Join(allMonitors, ",")
	fs.StringVar(&monitorList, "monitors", monitorList, "comma-separated monitors: none (always run), agent, run, auditd, events")
	fs.StringVar(&o.watchedFile, "watched-file", "/etc/shadow", "the file of the watched-open storm: one the default config watches, and auditd's -w")
	stormNames := []string{}
	for _, s := range allStorms(o.watchedFile) {
		stormNames = append(stormNames, s.Name)
		o.n[s.Name] = s.defaultN
	}
	stormList := strings.Join(stormNames, ",")
	fs.StringVar(&stormList, "storms", stormList, "comma-separated storms")
	fs.Func("n", "operations per run, as storm=N[,storm=N] (defaults: "+benchutil.FormatCounts(o.n, stormNames)+"; nginx: requests)", benchutil.CountsFlag(o.n, stormNames, "storm"))
	fs.IntVar(&o.abConcurrency, "c", 8, "nginx: ab's concurrency")
	fs.StringVar(&o.out, "out", "tests/bench/results/deployed.json", "where to write the JSON results")
	fs.StringVar(&o.profileDir, "profile", "", "collect Go CPU profiles (harrier --cpuprofile) into this directory: one extra untimed run per storm and harrier monitor (<storm>-<monitor>.pprof, the agent's backend in <storm>-agent-backend.pprof) and an idle run per monitor (idle-<monitor>.pprof, for -diff_base)")
	fs.DurationVar(&o.settle, "settle", time.Second, "wait after a monitor is ready, then until its CPU use is quiet, before the storm")
	fs.DurationVar(&o.drain, "drain", 300*time.Millisecond, "wait after the storm, then until the monitor's CPU use is quiet, before reading its CPU time")
	fs.DurationVar(&o.maxQuiet, "max-quiet", 15*time.Second, "longest wait for a monitor to become quiet (settle and drain)")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 60*time.Second, "how long a monitor may take to become ready")
	fs.DurationVar(&o.stopTimeout, "stop-timeout", 30*time.Second, "how long a monitor may take to exit once signalled")
	fs.BoolVar(&o.strict, "strict", false, "exit 1 when harrier agent or run misses a target")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.rounds < 1 {
		return o, fmt.Errorf("-rounds %d: must be at least 1", o.rounds)
	}
	if o.abConcurrency < 1 {
		return o, fmt.Errorf("-c %d: must be at least 1", o.abConcurrency)
	}
	o.monitors = []string{monNone}
	for m := range strings.SplitSeq(monitorList, ",") {
		m = strings.TrimSpace(m)
		switch {
		case m == monNone:
		case !slices.Contains(allMonitors, m):
			return o, fmt.Errorf("-monitors: %q: unknown (known: %s)", m, strings.Join(allMonitors, ", "))
		case slices.Contains(o.monitors, m):
			return o, fmt.Errorf("-monitors: %q listed twice", m)
		default:
			o.monitors = append(o.monitors, m)
		}
	}
	known := allStorms(o.watchedFile)
	for name := range strings.SplitSeq(stormList, ",") {
		name = strings.TrimSpace(name)
		i := slices.IndexFunc(known, func(s storm) bool { return s.Name == name })
		if i < 0 {
			return o, fmt.Errorf("-storms: %q: unknown (known: %s)", name, strings.Join(stormNames, ", "))
		}
		if slices.ContainsFunc(o.storms, func(s storm) bool { return s.Name == name }) {
			return o, fmt.Errorf("-storms: %q listed twice", name)
		}
		o.storms = append(o.storms, known[i])
	}
	if err := checkFiles(o); err != nil {
		return o, err
	}
	return o, nil
}

// checkFiles makes sure the unwatched storms' files are outside the default
// config's watched paths and the watched storm's file inside them.
func checkFiles(o options) error {
	watched := slices.Concat(sensor.DefaultWatchPaths(), sensor.DefaultSensitivePaths())
	covered := func(f string) bool {
		return slices.ContainsFunc(watched, func(p string) bool { return strings.HasPrefix(f, p) })
	}
	for _, s := range o.storms {
		switch {
		case s.workload == "open-unwatched" && covered(s.file):
			return fmt.Errorf("storm %s: %s is watched by the default config", s.Name, s.file)
		case s.workload == "open-watched" && !covered(s.file):
			return fmt.Errorf("-watched-file %s: not watched by the default config", s.file)
		}
	}
	return nil
}

// resolveTools makes the tools' paths absolute and checks they exist.
func (o *options) resolveTools() error {
	tools := []*string{&o.harrier, &o.loadgen}
	if slices.ContainsFunc(o.storms, storm.isNginx) {
		tools = append(tools, &o.nginx, &o.ab)
	}
	for _, p := range tools {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return fmt.Errorf("%s: %w", *p, err)
		}
		if _, err := os.Stat(abs); err != nil {
			return fmt.Errorf("%w (tests/bench/deployed.sh builds harrier and loadgen and installs nginx, apache2-utils and auditd)", err)
		}
		*p = abs
	}
	if slices.Contains(o.monitors, monAuditd) {
		for _, t := range []string{"auditd", "auditctl"} {
			if _, err := exec.LookPath(t); err != nil {
				return fmt.Errorf("monitor auditd: %w (apt-get install auditd)", err)
			}
		}
	}
	return nil
}
