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
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/harrier-sec/harrier/sensor"
	"github.com/harrier-sec/harrier/tests/bench/internal/auditgen"
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

// agent is `harrier agent` (or `harrier run`) in the cgroup.
type agent struct {
	cmd     *exec.Cmd
	backend *exec.Cmd // outside the cgroup; nil in run mode
	// tokenFile holds the backend's API token.
	tokenFile string
	api       string
	token     string
	metrics   string
	markers   string
	markerN   int
	exited    chan struct{}
	// audit is the audit webhook receiver, when the agent runs one.
	audit *auditTarget
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startAgent starts the agent in cg; withAudit also turns on its audit
// webhook receiver (kube.audit, with kube.mode off: the receiver needs no
// API server).
func startAgent(ctx context.Context, o options, work string, cg *cgroup, withAudit bool) (*agent, error) {
	api, err := freePort()
	if err != nil {
		return nil, err
	}
	metrics, err := freePort()
	if err != nil {
		return nil, err
	}
	watched := filepath.Join(work, "watched")
	if err := os.MkdirAll(watched, 0o755); err != nil {
		return nil, err
	}
	paths, _ := json.Marshal(append(sensor.DefaultWatchPaths(), watched+"/"))
	cfg := filepath.Join(work, "harrier.yaml")
	conf := fmt.Sprintf("dataDir: %s/data\nmetricsAddr: %s\nsensor:\n  watchPaths: %s\nbackend:\n  apiAddr: %s\n  ingestAddr: 127.0.0.1:0\n",
		work, metrics, paths, api)
	var backend *exec.Cmd
	if o.mode == "agent" {
		var err error
		if backend, conf, err = startBackend(ctx, o, work, api); err != nil {
			return nil, err
		}
		conf = fmt.Sprintf("dataDir: %s/data\nmetricsAddr: %s\nsensor:\n  watchPaths: %s\n", work, metrics, paths) + conf
	}
	var target *auditTarget
	if withAudit {
		var kubeConf string
		if target, kubeConf, err = auditReceiver(ctx, o, work); err != nil {
			return nil, err
		}
		conf += kubeConf
	}
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	// The shell moves itself into the cgroup, then becomes harrier.
	script := joinProcs(cg.procsFiles) + `exec "$0" ` + o.mode + ` -c "$CFG"`
	cmd := exec.CommandContext(ctx, "sh", "-c", script, o.harrier)
	cmd.Env = append(os.Environ(), "CFG="+cfg, "GOMEMLIMIT=")
	logf, err := os.Create(filepath.Join(work, "harrier.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	a := &agent{cmd: cmd, backend: backend, api: "http://" + api, metrics: "http://" + metrics + "/metrics", markers: filepath.Join(work, "markers"),
		exited: make(chan struct{}), audit: target}
	go func() { _ = cmd.Wait(); close(a.exited) }()
	if err := os.MkdirAll(a.markers, 0o755); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		tokenFile := filepath.Join(work, "data", "api-token")
		if o.mode == "agent" {
			tokenFile = filepath.Join(work, "backend", "api-token")
		}
		if tok, err := os.ReadFile(tokenFile); err == nil {
			if _, err := a.scrape(); err == nil {
				a.token, a.tokenFile = strings.TrimSpace(string(tok)), tokenFile
				time.Sleep(2 * time.Second) // the uplink connects
				return a, nil
			}
		}
		select {
		case <-a.exited:
			log, _ := os.ReadFile(filepath.Join(work, "harrier.log"))
			return nil, fmt.Errorf("harrier %s exited at start:\n%s", o.mode, log)
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("harrier %s did not come up in 60 s", o.mode)
}

func joinProcs(files []string) string {
	var b strings.Builder
	for _, f := range files {
		fmt.Fprintf(&b, "echo $$ > %q && ", f)
	}
	return b.String()
}

func (a *agent) stop() {
	_ = a.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-a.exited:
	case <-time.After(15 * time.Second):
		_ = a.cmd.Process.Kill()
	}
	if a.backend != nil {
		_ = a.backend.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { _ = a.backend.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = a.backend.Process.Kill()
		}
	}
}

// startBackend makes a PKI with `harrier certs` and starts `harrier
// backend` outside the agent's cgroup, API on api; it returns the agent's
// uplink config section.
func startBackend(ctx context.Context, o options, work, api string) (*exec.Cmd, string, error) {
	pki, err := ensurePKI(ctx, o, work)
	if err != nil {
		return nil, "", err
	}
	for _, args := range [][]string{
		{"certs", "backend", "--out", pki, "--host", "127.0.0.1"},
		{"certs", "agent", "--out", pki, "bench-node"},
	} {
		if out, err := exec.CommandContext(ctx, o.harrier, args...).CombinedOutput(); err != nil {
			return nil, "", fmt.Errorf("harrier %v: %w: %s", args, err, out)
		}
	}
	ingest, err := freeUDPPort()
	if err != nil {
		return nil, "", err
	}
	cfg := filepath.Join(work, "backend.yaml")
	conf := fmt.Sprintf("dataDir: %s/backend\nbackend:\n  apiAddr: %s\n  ingestAddr: %s\n  caFile: %s/ca.crt\n  certFile: %s/backend.crt\n  keyFile: %s/backend.key\n",
		work, api, ingest, pki, pki, pki)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return nil, "", err
	}
	logf, err := os.Create(filepath.Join(work, "backend.log"))
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(o.harrier, "backend", "-c", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	uplink := fmt.Sprintf("uplink:\n  addr: %s\n  serverName: 127.0.0.1\n  agentID: bench-node\n  caFile: %s/ca.crt\n  certFile: %s/bench-node.crt\n  keyFile: %s/bench-node.key\n",
		ingest, pki, pki, pki)
	return cmd, uplink, nil
}

// ensurePKI makes the bench's CA with `harrier certs init` once.
func ensurePKI(ctx context.Context, o options, work string) (string, error) {
	pki := filepath.Join(work, "pki")
	if _, err := os.Stat(filepath.Join(pki, "ca.crt")); err == nil {
		return pki, nil
	}
	if out, err := exec.CommandContext(ctx, o.harrier, "certs", "init", "--out", pki).CombinedOutput(); err != nil {
		return "", fmt.Errorf("harrier certs init: %w: %s", err, out)
	}
	return pki, nil
}

// auditReceiver makes the audit webhook's serving certificate (`harrier
// certs webhook audit`) and bearer token, and returns where to post and the
// agent's kube config section.
func auditReceiver(ctx context.Context, o options, work string) (*auditTarget, string, error) {
	pki, err := ensurePKI(ctx, o, work)
	if err != nil {
		return nil, "", err
	}
	if out, err := exec.CommandContext(ctx, o.harrier, "certs", "webhook", "audit", "--out", pki, "--host", "127.0.0.1").CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("harrier certs webhook audit: %w: %s", err, out)
	}
	addr, err := freePort()
	if err != nil {
		return nil, "", err
	}
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return nil, "", err
	}
	t := &auditTarget{addr: addr, caFile: filepath.Join(pki, "ca.crt"), tokenFile: filepath.Join(work, "audit-token")}
	if err := os.WriteFile(t.tokenFile, []byte(hex.EncodeToString(tok)+"\n"), 0o600); err != nil {
		return nil, "", err
	}
	conf := fmt.Sprintf("kube:\n  mode: \"off\"\n  audit:\n    webhookAddr: %s\n    certFile: %s/audit.crt\n    keyFile: %s/audit.key\n    tokenFile: %s\n",
		addr, pki, pki, t.tokenFile)
	return t, conf, nil
}

func freeUDPPort() (string, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.LocalAddr().String(), nil
}

func (a *agent) alive() bool {
	select {
	case <-a.exited:
		return false
	default:
		return true
	}
}

var metricLine = regexp.MustCompile(`^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$`)

// scrape reads the agent's metrics, summing label sets per name.
func (a *agent) scrape() (map[string]float64, error) {
	resp, err := http.Get(a.metrics)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if m := metricLine.FindStringSubmatch(sc.Text()); m != nil {
			v, _ := strconv.ParseFloat(m[3], 64)
			out[m[1]] += v
			if m[2] != "" {
				out[m[1]+m[2]] = v // one label set, e.g. name{kind="exec"}
			}
		}
	}
	return out, sc.Err()
}

func (a *agent) measureIdle(ctx context.Context, cg *cgroup, d time.Duration) (stepResult, error) {
	cpu0, _ := cg.cpuUsage()
	start := time.Now()
	var rss, heap float64
	for time.Since(start) < d {
		if m, err := a.scrape(); err == nil {
			rss = math.Max(rss, m["process_resident_memory_bytes"]/(1<<20))
			heap = math.Max(heap, m["go_memstats_heap_inuse_bytes"]/(1<<20))
		}
		select {
		case <-ctx.Done():
			return stepResult{}, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	cpu1, _ := cg.cpuUsage()
	return stepResult{step: step{Workload: "idle"}, AgentCores: (cpu1 - cpu0).Seconds() / time.Since(start).Seconds(), RSSPeakMiB: rss, HeapPeakMiB: heap, AgentAliveAfter: a.alive()}, nil
}

// marker execs a fresh copy of /bin/true with the test-alert marker: a new
// executable each time, so every marker is a new alert (not a repeat).
func (a *agent) marker() (string, time.Time, error) {
	a.markerN++
	name := filepath.Join(a.markers, fmt.Sprintf("m%d", a.markerN))
	b, err := os.ReadFile("/bin/true")
	if err != nil {
		return "", time.Time{}, err
	}
	if err := os.WriteFile(name, b, 0o755); err != nil {
		return "", time.Time{}, err
	}
	at := time.Now()
	return name, at, exec.Command(name, "HARRIER-TEST-ALERT").Run()
}

// listAlerts decodes the backend's alerts of one detection into body; a
// failed request or a body that does not decode is just a poll that saw
// nothing yet.
func (a *agent) listAlerts(ctx context.Context, detection string, body any) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.api+"/api/v1/alerts?detection="+detection+"&limit=1000", nil)
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(body) == nil
}

// markSeen records now as when name was first seen, if it is wanted.
func markSeen(want, seen map[string]time.Time, name string, now time.Time) {
	if _, ok := want[name]; ok {
		if _, done := seen[name]; !done {
			seen[name] = now
		}
	}
}

// pollAlerts records, per marker exe, when the backend first listed its alert.
func (a *agent) pollAlerts(ctx context.Context, want map[string]time.Time, seen map[string]time.Time) {
	var body struct {
		Alerts []struct {
			Process struct {
				Exe string `json:"exe"`
			} `json:"process"`
		} `json:"alerts"`
	}
	if !a.listAlerts(ctx, "test-alert", &body) {
		return
	}
	now := time.Now()
	for _, al := range body.Alerts {
		markSeen(want, seen, al.Process.Exe, now)
	}
}

// auditMarkers posts the audit steps' attack markers and sees their alerts
// arrive at the backend.
type auditMarkers struct {
	poster *auditgen.Poster
	gen    auditgen.Generator
	n      int
	want   map[string]time.Time // marker binding name → posted at
	seen   map[string]time.Time // → first listed by the backend
}

func newAuditMarkers(t *auditTarget) (*auditMarkers, error) {
	if t == nil {
		return nil, errors.New("audit step without the agent's audit receiver")
	}
	p, err := auditgen.NewPoster(t.addr, t.caFile, t.tokenFile)
	if err != nil {
		return nil, err
	}
	return &auditMarkers{poster: p, want: map[string]time.Time{}, seen: map[string]time.Time{}}, nil
}

// post sends one batch of benign events with a marker in the middle, as
// the API server would deliver it.
func (m *auditMarkers) post(ctx context.Context) error {
	m.n++
	name := fmt.Sprintf("bench-marker-%d-%d", os.Getpid(), m.n)
	now := time.Now()
	batch := make([]auditgen.Event, 0, 20)
	for range 10 {
		batch = append(batch, m.gen.Next(now))
	}
	batch = append(batch, auditgen.Marker(name, now))
	for range 9 {
		batch = append(batch, m.gen.Next(now))
	}
	m.want[name] = now
	return m.poster.Post(ctx, batch)
}

// poll records when the backend first lists each marker's alert.
func (m *auditMarkers) poll(ctx context.Context, a *agent) {
	var body struct {
		Alerts []struct {
			Evidence []struct {
				Audit struct {
					Name string `json:"name"`
				} `json:"audit"`
			} `json:"evidence"`
		} `json:"alerts"`
	}
	if !a.listAlerts(ctx, auditgen.MarkerDetection, &body) {
		return
	}
	now := time.Now()
	for _, al := range body.Alerts {
		for _, ev := range al.Evidence {
			markSeen(m.want, m.seen, ev.Audit.Name, now)
		}
	}
}

// latencies returns the sorted marker latencies in ms and how many are missing.
func latencies(want, seen map[string]time.Time) ([]float64, int) {
	var lat []float64
	for name, at := range want {
		if t, ok := seen[name]; ok {
			lat = append(lat, float64(t.Sub(at).Milliseconds()))
		}
	}
	slices.Sort(lat)
	return lat, len(want) - len(lat)
}

func (a *agent) runStep(ctx context.Context, o options, work string, cg *cgroup, s step) (stepResult, error) {
	r := stepResult{step: s, Drops: map[string]float64{}}
	before, err := a.scrape()
	if err != nil {
		return r, fmt.Errorf("scrape: %w", err)
	}
	oom0 := cg.oomKills()
	cpu0, _ := cg.cpuUsage()
	start := time.Now()

	type lg struct {
		res loadResult
		err error
	}
	done := make(chan lg, 2)
	launch := func(st step) {
		go func() { res, err := loadgen(ctx, o, work, st, o.stepDuration); done <- lg{res, err} }()
	}
	loads := 1
	if s.Workload == "storm" {
		// Ten times what the pipeline handles, in watched opens, plus an exec storm.
		launch(step{Workload: "open-watched", Rate: 500000})
		launch(step{Workload: "exec", Rate: 5000})
		loads = 2
	} else {
		launch(s)
	}
	var attack chan error
	var attackOut strings.Builder
	if s.Workload == "storm" {
		// The attack starts once the storm is on.
		attack = make(chan error, 1)
		go func() {
			time.Sleep(2 * time.Second)
			cmd := exec.CommandContext(ctx, o.harrier, "simulate", "--local", "--scenario", "webshell,secrets,mining",
				"--api", a.api, "--token-file", a.tokenFile, "--timeout", "15s")
			cmd.Stdout, cmd.Stderr = &attackOut, &attackOut
			attack <- cmd.Run()
		}()
	}
	want := map[string]time.Time{}
	seen := map[string]time.Time{}
	nextMarker := time.Now().Add(time.Second)
	var am *auditMarkers
	var auditQueuePeak float64
	if s.Workload == "audit" {
		if am, err = newAuditMarkers(o.audit); err != nil {
			return r, err
		}
		defer am.poster.Close()
	}
	nextAuditMarker := time.Now().Add(1500 * time.Millisecond)
	var rss, heap float64
	finished := 0
	var load loadResult
	for finished < loads {
		select {
		case l := <-done:
			finished++
			if l.err != nil {
				return r, l.err
			}
			load.OpsPerSec += l.res.OpsPerSec
			load.CPUPerOpUs = l.res.CPUPerOpUs
			load.N += l.res.N
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(nextMarker) && time.Since(start) < o.stepDuration-time.Second {
			// One marker every 3 s stays under the per-detection rate limit.
			name, at, err := a.marker()
			if err == nil {
				want[name] = at
			}
			nextMarker = time.Now().Add(3 * time.Second)
		}
		if am != nil && time.Now().After(nextAuditMarker) && time.Since(start) < o.stepDuration-time.Second {
			// Like the exec markers: one every 3 s, under the rate limit.
			if err := am.post(ctx); err != nil {
				return r, fmt.Errorf("audit marker: %w", err)
			}
			nextAuditMarker = time.Now().Add(3 * time.Second)
		}
		a.pollAlerts(ctx, want, seen)
		if am != nil {
			am.poll(ctx, a)
		}
		if m, err := a.scrape(); err == nil {
			rss = math.Max(rss, m["process_resident_memory_bytes"]/(1<<20))
			heap = math.Max(heap, m["go_memstats_heap_inuse_bytes"]/(1<<20))
			auditQueuePeak = math.Max(auditQueuePeak, m["harrier_audit_queue_depth"])
		}
	}
	elapsed := time.Since(start)
	cpu1, _ := cg.cpuUsage()
	// Give late alerts up to 10 s.
	for wait := time.Now().Add(10 * time.Second); (len(seen) < len(want) || am != nil && len(am.seen) < len(am.want)) && time.Now().Before(wait); time.Sleep(100 * time.Millisecond) {
		a.pollAlerts(ctx, want, seen)
		if am != nil {
			am.poll(ctx, a)
		}
	}
	after, err := a.scrape()
	if err != nil {
		r.AgentAliveAfter = a.alive()
		return r, nil
	}
	lat, missing := latencies(want, seen)
	r.AlertsMissing = missing
	r.AlertP50Ms, r.AlertP99Ms = percentile(lat, 0.5), percentile(lat, 0.99)
	delta := func(name string) float64 { return after[name] - before[name] }
	r.SpoolAlerts = delta(alertSpoolLatency + "_count")
	r.SpoolAlertP50Ms, r.SpoolAlertP99Ms = histogramQuantile(before, after, alertSpoolLatency, 0.5)*1000, histogramQuantile(before, after, alertSpoolLatency, 0.99)*1000
	switch s.Workload {
	case "containers":
		c := &containerResult{Run: load.N, EventsPerSec: delta("harrier_sensor_container_events_total") / elapsed.Seconds()}
		if load.N > 0 {
			c.ExecsPerContainer = delta(`harrier_sensor_container_events_total{kind="exec"}`) / float64(load.N)
		}
		r.Containers = c
	case "audit":
		alat, amissing := latencies(am.want, am.seen)
		r.Audit = &auditResult{
			PostedPerSec: load.OpsPerSec, Posted: load.N + 20*len(am.want),
			Accepted: delta("harrier_audit_events_total"), AcceptedPerSec: delta("harrier_audit_events_total") / elapsed.Seconds(),
			Rejected: delta("harrier_audit_rejected_total"), Dropped: delta("harrier_audit_dropped_total"),
			QueuePeak: auditQueuePeak, BatchSize: auditgen.BatchSize(s.Rate),
			MarkerP50Ms: percentile(alat, 0.5), MarkerP99Ms: percentile(alat, 0.99), MarkersMissing: amissing, Markers: len(am.want),
		}
	}
	r.AchievedRate = load.OpsPerSec
	r.CPUPerOpAgent = load.CPUPerOpUs
	r.AgentCores = (cpu1 - cpu0).Seconds() / elapsed.Seconds()
	r.EventsPerSec = (after["harrier_sensor_emitted_total"] - before["harrier_sensor_emitted_total"]) / elapsed.Seconds()
	r.RSSPeakMiB, r.HeapPeakMiB = rss, heap
	for name, key := range map[string]string{
		"harrier_sensor_kernel_ring_full_total": "kernel_ring", "harrier_sensor_queue_shed_total": "shed_fork_exit",
		"harrier_sensor_kernel_shed_reads_total": "kernel_shed_reads",
		"harrier_sensor_queue_dropped_total":     "queue", "harrier_analytics_rate_limited_total": "alert_rate_limited",
		"harrier_spool_evicted_total": "spool_evicted", "harrier_spool_rejected_total": "spool_rejected",
		"harrier_spool_events_capped_total": "spool_capped",
	} {
		r.Drops[key] = after[name] - before[name]
	}
	r.OOMKills = cg.oomKills() - oom0
	r.AgentAliveAfter = a.alive()
	if attack != nil {
		err := <-attack
		ok := err == nil
		r.AttackDetected, r.AttackReport = &ok, attackOut.String()
	}
	return r, nil
}

func slowdown(r stepResult) string {
	if r.Slowdown > 0 {
		return fmt.Sprintf("%.2f×", r.Slowdown)
	}
	return "—"
}

// alertSpoolLatency is the agent's histogram of behaviour → alert in spool.
const alertSpoolLatency = "harrier_alert_spool_latency_seconds"

// histogramQuantile is the upper bound of the bucket holding quantile q of
// the observations a Prometheus histogram gained between two scrapes
// (+Inf: the largest finite bound is reported; 0 when nothing was observed).
func histogramQuantile(before, after map[string]float64, name string, q float64) float64 {
	type bucket struct{ le, n float64 }
	var bs []bucket
	prefix := name + `_bucket{le="`
	for k, v := range after {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(rest, `"}`), 64)
		if err != nil {
			continue // +Inf
		}
		bs = append(bs, bucket{le, v - before[k]})
	}
	total := after[name+"_count"] - before[name+"_count"]
	if total <= 0 || len(bs) == 0 {
		return 0
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	for _, b := range bs {
		if b.n >= q*total {
			return b.le
		}
	}
	return bs[len(bs)-1].le
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(math.Min(float64(len(sorted)-1), math.Floor(p*float64(len(sorted)))))]
}

func report(w io.Writer, o options, idle stepResult, rs []stepResult) {
	fmt.Fprintf(w, "## Budget benchmark: `harrier %s` in a cgroup of %.0fm CPU and %d MiB\n\n", o.mode, o.cpu*1000, o.memBytes>>20)
	if o.requests {
		fmt.Fprintf(w, "CPU weights as the kubelet sets them: the agent's cgroup for a %.0fm request (%d shares), the workload's for the other %.0fm of the node's %d CPUs.\n\n",
			o.cpu*1000, cpuShares(o.cpu), (float64(runtime.NumCPU())-o.cpu)*1000, runtime.NumCPU())
	} else {
		fmt.Fprint(w, "No CPU weights: the workload runs in the root cgroup.\n\n")
	}
	fmt.Fprintf(w, "Idle: %.1fm CPU, RSS %.1f MiB, Go heap %.1f MiB.\n\n", idle.AgentCores*1000, idle.RSSPeakMiB, idle.HeapPeakMiB)
	fmt.Fprintln(w, "| load | offered/s | achieved/s | pipeline events/s | agent CPU | RSS peak | heap peak | lost: ring / queue | shed: kernel reads / queue | raw events not spooled (cap) | alert in spool p50 / p99 (alerts) | alert at backend p50 / p99 (missing) | workload slowdown | OOM |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		slow := slowdown(r)
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %.0f | %.0fm | %.0f MiB | %.0f MiB | %.0f / %.0f | %.0f / %.0f | %.0f | ≤ %.0f / ≤ %.0f ms (%.0f) | %.0f / %.0f ms (%d) | %s | %d |\n",
			r.Workload, r.Rate, r.AchievedRate, r.EventsPerSec, r.AgentCores*1000, r.RSSPeakMiB, r.HeapPeakMiB,
			r.Drops["kernel_ring"], r.Drops["queue"], r.Drops["kernel_shed_reads"], r.Drops["shed_fork_exit"], r.Drops["spool_capped"],
			r.SpoolAlertP50Ms, r.SpoolAlertP99Ms, r.SpoolAlerts, r.AlertP50Ms, r.AlertP99Ms, r.AlertsMissing, slow, r.OOMKills)
	}
	var ctrs, audits []stepResult
	for _, r := range rs {
		if r.Containers != nil {
			ctrs = append(ctrs, r)
		}
		if r.Audit != nil {
			audits = append(audits, r)
		}
	}
	if len(ctrs) > 0 {
		fmt.Fprintln(w, "\nContainer churn (runc containers created, run to exit and deleted; container context kept up when execs in containers per container ≥ 2):")
		fmt.Fprintln(w, "\n| containers/s offered | run/s | containers | events with a container ID/s | execs in containers per container | agent CPU | RSS peak | workload slowdown |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|")
		for _, r := range ctrs {
			c := r.Containers
			fmt.Fprintf(w, "| %.0f | %.1f | %d | %.0f | %.2f | %.0fm | %.0f MiB | %s |\n",
				r.Rate, r.AchievedRate, c.Run, c.EventsPerSec, c.ExecsPerContainer, r.AgentCores*1000, r.RSSPeakMiB, slowdown(r))
		}
	}
	if len(audits) > 0 {
		fmt.Fprintf(w, "\nAudit-event stream (EventLists over HTTPS to the audit webhook; marker: a ClusterRoleBinding to cluster-admin, %s):\n", auditgen.MarkerDetection)
		fmt.Fprintln(w, "\n| events/s offered | posted/s | batch | accepted/s | accepted / posted | rejected requests | dropped | queue peak | agent CPU | RSS peak | marker alert p50 / p99 (missing of n) |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
		for _, r := range audits {
			a := r.Audit
			fmt.Fprintf(w, "| %.0f | %.0f | %d | %.0f | %.0f / %d | %.0f | %.0f | %.0f | %.0fm | %.0f MiB | %.0f / %.0f ms (%d of %d) |\n",
				r.Rate, a.PostedPerSec, a.BatchSize, a.AcceptedPerSec, a.Accepted, a.Posted, a.Rejected, a.Dropped, a.QueuePeak,
				r.AgentCores*1000, r.RSSPeakMiB, a.MarkerP50Ms, a.MarkerP99Ms, a.MarkersMissing, a.Markers)
		}
	}
	for _, r := range rs {
		if r.AttackDetected != nil {
			fmt.Fprintf(w, "\nAttack during the storm (`harrier simulate --local --scenario webshell,secrets,mining`): detected = %t\n\n```\n%s```\n", *r.AttackDetected, r.AttackReport)
		}
	}
}
