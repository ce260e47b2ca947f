// Command budget runs `harrier agent` (backend outside) or `harrier run` inside a cgroup limited like the
// DaemonSet (360m CPU, 296 MiB) and offers it load in rate steps, recording
// per step: the agent's CPU and memory, events through the pipeline, drops
// per stage, alert latency (behaviour → alert at the backend API) and the
// workload's slowdown against the same paced load without the agent. It
// prints a Markdown table and writes JSON. Run it with tests/bench/budget.sh.
//
// Traffic stays on 127.0.0.1; files are written only under a temporary
// directory; the cgroup it creates is removed at the end.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type step struct {
	Workload string  `json:"workload"`
	Rate     float64 `json:"offered_rate"` // operations per second asked of loadgen
}

// stepResult is one row of the report.
type stepResult struct {
	step
	AchievedRate float64            `json:"achieved_rate"`
	EventsPerSec float64            `json:"pipeline_events_per_sec"`
	AgentCores   float64            `json:"agent_cpu_cores"`
	RSSPeakMiB   float64            `json:"rss_peak_mib"`
	HeapPeakMiB  float64            `json:"heap_peak_mib"`
	Drops        map[string]float64 `json:"drops"`
	AlertP50Ms   float64            `json:"alert_latency_p50_ms"`
	AlertP99Ms   float64            `json:"alert_latency_p99_ms"`
	// Behaviour → alert durable in the agent's spool, for every new alert
	// of the step (harrier_alert_spool_latency_seconds): bucket upper
	// bounds, so "≤".
	SpoolAlertP50Ms float64 `json:"alert_in_spool_p50_ms"`
	SpoolAlertP99Ms float64 `json:"alert_in_spool_p99_ms"`
	SpoolAlerts     float64 `json:"alerts_in_spool"`
	AlertsMissing   int     `json:"alerts_missing"`
	CPUPerOpBase    float64 `json:"cpu_per_op_us_without_agent"`
	CPUPerOpAgent   float64 `json:"cpu_per_op_us_with_agent"`
	Slowdown        float64 `json:"slowdown"`
	OOMKills        int     `json:"oom_kills"`
	// Storm only: `harrier simulate --local` played during the storm; did
	// every expected alert arrive within its timeout?
	AttackDetected  *bool  `json:"attack_detected_during_storm,omitempty"`
	AttackReport    string `json:"attack_report,omitempty"`
	AgentAliveAfter bool   `json:"agent_alive_after"`
	// Containers steps: the containers run, and what the sensor attributed
	// to a container meanwhile (harrier_sensor_container_events_total).
	Containers *containerResult `json:"containers,omitempty"`
	// Audit steps: the receiver's counters and the marker's alert latency.
	Audit *auditResult `json:"audit,omitempty"`
}

type containerResult struct {
	Run int `json:"containers_run"`
	// EventsPerSec are events of any kind carrying a container ID.
	EventsPerSec float64 `json:"container_events_per_sec"`
	// ExecsPerContainer is exec events attributed to a container per
	// container run: each runs sh and /bin/hostname, so at least 2 when the
	// container context keeps up (other containers on the host add to it).
	ExecsPerContainer float64 `json:"container_execs_per_container"`
}

type auditResult struct {
	PostedPerSec   float64 `json:"events_posted_per_sec"`
	AcceptedPerSec float64 `json:"events_accepted_per_sec"`
	Accepted       float64 `json:"events_accepted"`
	Posted         int     `json:"events_posted"`
	Rejected       float64 `json:"requests_rejected"`
	Dropped        float64 `json:"events_dropped"`
	QueuePeak      float64 `json:"queue_depth_peak"`
	BatchSize      int     `json:"batch_size"`
	// The cluster-admin-binding marker: audit event posted → alert listed
	// by the backend API.
	MarkerP50Ms    float64 `json:"marker_alert_latency_p50_ms"`
	MarkerP99Ms    float64 `json:"marker_alert_latency_p99_ms"`
	MarkersMissing int     `json:"markers_missing"`
	Markers        int     `json:"markers"`
}

type options struct {
	harrier, loadgen string
	steps            string
	stepDuration     time.Duration
	cpu              float64
	memBytes         int64
	out              string
	baseline         bool
	// requests gives the agent's cgroup the CPU weight the kubelet gives a
	// Guaranteed pod for its request, and runs the workload in a sibling
	// cgroup weighted with the rest of the node's CPUs, as other pods are.
	requests bool
	// mode is "agent" (the DaemonSet's shape: `harrier agent` in the cgroup,
	// `harrier backend` outside it) or "run" (the all-in-one, both inside).
	mode string
	// audit is the agent's audit webhook, set once the agent runs with it.
	audit *auditTarget
}

// auditTarget is where and how the audit steps post.
type auditTarget struct {
	addr, caFile, tokenFile string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		slog.New(slog.NewTextHandler(os.Stderr, nil)).Error("budget benchmark failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	var o options
	fs := flag.NewFlagSet("budget", flag.ContinueOnError)
	fs.StringVar(&o.harrier, "harrier", "bin/harrier", "the harrier binary")
	fs.StringVar(&o.loadgen, "loadgen", "tests/bench/bin/loadgen", "the loadgen binary")
	fs.StringVar(&o.steps, "steps", defaultSteps,
		"workload:rate steps ("+strings.Join(workloads(), ", ")+"); storm:0 is a 10x overload of watched opens and execs with an attack in the middle")
	fs.DurationVar(&o.stepDuration, "step", 15*time.Second, "duration of each step")
	fs.Float64Var(&o.cpu, "cpu", 0.36, "CPU limit in cores")
	fs.BoolVar(&o.requests, "requests", false,
		"weight the agent's cgroup by its CPU request (= the limit) the way the kubelet does for a Guaranteed pod, and run the workload in a sibling cgroup weighted with the rest of the node's CPUs (default: the workload in the root cgroup)")
	fs.Int64Var(&o.memBytes, "mem", 296<<20, "memory limit in bytes")
	fs.StringVar(&o.out, "out", "tests/bench/results/budget.json", "JSON result file")
	fs.BoolVar(&o.baseline, "baseline", true, "also run each step without the agent (workload slowdown)")
	fs.StringVar(&o.mode, "mode", "agent", "agent: `harrier agent` in the cgroup and the backend outside it, as a DaemonSet runs; run: `harrier run` (agent and backend) in the cgroup")
	if err := fs.Parse(args); err != nil {
		return err
	}
	steps, err := parseSteps(o.steps)
	if err != nil {
		return err
	}
	if o.mode != "agent" && o.mode != "run" {
		return fmt.Errorf("-mode %q: want agent or run", o.mode)
	}
	work, err := os.MkdirTemp("", "harrier-budget-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	base := map[step]float64{}
	if o.baseline {
		for _, s := range steps {
			if s.Workload == "storm" || s.Workload == "audit" {
				continue // no storm without the agent; no receiver to post audit events to
			}
			fmt.Fprintf(os.Stderr, "budget: baseline %s at %.0f/s\n", s.Workload, s.Rate)
			res, err := loadgen(ctx, o, work, s, o.stepDuration/2)
			if err != nil {
				return err
			}
			base[s] = res.CPUPerOpUs
		}
	}

	cg, err := newCgroup(o.cpu, o.memBytes, o.requests)
	if err != nil {
		return err
	}
	defer cg.remove()
	if o.requests {
		// Everything this process starts from now on (the load, the
		// attack, the markers, the backend) runs there; the agent moves
		// itself into its own cgroup.
		leave, err := joinWorkloadCgroup(float64(runtime.NumCPU()) - o.cpu)
		if err != nil {
			return err
		}
		defer leave()
	}
	ag, err := startAgent(ctx, o, work, cg, hasWorkload(steps, "audit"))
	if err != nil {
		return err
	}
	defer ag.stop()
	o.audit = ag.audit
	idle, err := ag.measureIdle(ctx, cg, 10*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "budget: idle: %.1f m CPU, RSS %.1f MiB\n", idle.AgentCores*1000, idle.RSSPeakMiB)

	var results []stepResult
	for _, s := range steps {
		fmt.Fprintf(os.Stderr, "budget: step %s at %.0f/s\n", s.Workload, s.Rate)
		r, err := ag.runStep(ctx, o, work, cg, s)
		if err != nil {
			return err
		}
		if b, ok := base[s]; ok && b > 0 {
			r.CPUPerOpBase, r.Slowdown = b, r.CPUPerOpAgent/b
		}
		results = append(results, r)
		if !r.AgentAliveAfter {
			fmt.Fprintln(os.Stderr, "budget: the agent died; stopping")
			break
		}
	}
	report(os.Stdout, o, idle, results)
	b, err := json.MarshalIndent(map[string]any{"cpu_limit": o.cpu, "mem_limit": o.memBytes, "idle": idle, "steps": results}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(o.out, b, 0o644)
}

// defaultSteps are rates a 2-core VM sustains, the storm apart: it runs
// about 10 containers/s flat out (≈ 200 ms of CPU each, runc included; ≈ 6/s
// beside the agent), and the agent takes ≈ 24 000 audit events/s at its
// CPU limit.
const defaultSteps = "open-unwatched:100000,open-unwatched:300000,open-watched:10000,open-watched:25000,open-watched:50000," +
	"exec:200,exec:500,connect:5000,containers:2,containers:5,audit:1000,audit:5000,audit:20000,storm:0"

// workloads are the step workloads: loadgen's, and the storm.
func workloads() []string {
	return []string{"exec", "open-unwatched", "open-watched", "connect", "containers", "audit", "storm"}
}

func parseSteps(spec string) ([]step, error) {
	var out []step
	for _, part := range strings.Split(spec, ",") {
		w, r, ok := strings.Cut(strings.TrimSpace(part), ":")
		rate, err := strconv.ParseFloat(r, 64)
		switch {
		case !ok || err != nil || !slices.Contains(workloads(), w):
			return nil, fmt.Errorf("-steps: bad step %q: want WORKLOAD:RATE, WORKLOAD one of %s", part, strings.Join(workloads(), ", "))
		case math.IsNaN(rate) || math.IsInf(rate, 0) || rate < 0 || (rate == 0 && w != "storm"):
			return nil, fmt.Errorf("-steps: step %q: the rate must be a positive number", part)
		}
		out = append(out, step{Workload: w, Rate: rate})
	}
	return out, nil
}

// hasWorkload says whether steps include workload w.
func hasWorkload(steps []step, w string) bool {
	return slices.ContainsFunc(steps, func(s step) bool { return s.Workload == w })
}

// loadgen runs paced load for d, in as many processes as one core can pace.
func loadgen(ctx context.Context, o options, work string, s step, d time.Duration) (loadResult, error) {
	// containers: one process runs -parallel containers at once.
	perProc := map[string]float64{"exec": 1000, "open-unwatched": 150000, "open-watched": 100000, "connect": 10000,
		"containers": 1000, "audit": 20000}[s.Workload]
	n := int(math.Max(1, math.Ceil(s.Rate/perProc)))
	type out struct {
		res loadResult
		err error
	}
	ch := make(chan out, n)
	for i := 0; i < n; i++ {
		go func() {
			args := []string{"-workload", s.Workload, "-rate", strconv.FormatFloat(s.Rate/float64(n), 'f', 0, 64), "-duration", d.String()}
			switch s.Workload {
			case "open-watched":
				args = append(args, "-dir", filepath.Join(work, "watched"))
			case "containers":
				args = append(args, "-dir", filepath.Join(work, "containers"))
			case "audit":
				if o.audit == nil {
					ch <- out{err: errors.New("audit step without the agent's audit receiver")}
					return
				}
				args = append(args, "-addr", o.audit.addr, "-ca-file", o.audit.caFile, "-token-file", o.audit.tokenFile)
			}
			b, err := exec.CommandContext(ctx, o.loadgen, args...).Output()
			var r loadResult
			if err == nil {
				err = json.Unmarshal(b, &r)
			}
			ch <- out{r, err}
		}()
	}
	var total loadResult
	for i := 0; i < n; i++ {
		o := <-ch
		if o.err != nil {
			return total, fmt.Errorf("loadgen %s: %w", s.Workload, o.err)
		}
		total.OpsPerSec += o.res.OpsPerSec
		total.CPUPerOpUs += o.res.CPUPerOpUs / float64(n)
		total.N += o.res.N
	}
	return total, nil
}

type loadResult struct {
	N          int     `json:"n"`
	OpsPerSec  float64 `json:"ops_per_sec"`
	CPUPerOpUs float64 `json:"cpu_per_op_us"`
}
