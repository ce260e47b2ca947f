package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/harrier-sec/harrier/tests/bench/internal/benchutil"
)

// report is the JSON written to -out.
type report struct {
	Started    time.Time      `json:"started"`
	Finished   time.Time      `json:"finished"`
	Kernel     string         `json:"kernel"`
	CPUs       int            `json:"cpus"`
	LoadAvg    string         `json:"loadavgAtStart,omitempty"`
	Harrier    string         `json:"harrier"`
	Loadgen    string         `json:"loadgen"`
	Rounds     int            `json:"rounds"`
	Warmup     int            `json:"warmup"`
	N          map[string]int `json:"n"`
	ExtraWatch string         `json:"extraWatchPath"`
	// Floor: ON runs reported no syscall (-floor).
	Floor bool `json:"floor,omitempty"`
	// SensorIdleCPUSeconds is harrier's CPU time for an ON run without a
	// storm (startup, settle, drain, exit); median of idleRuns.
	SensorIdleCPUSeconds float64  `json:"sensorIdleCPUSeconds"`
	Results              []result `json:"results"`
}

// result summarizes one workload's rounds.
type result struct {
	Workload string `json:"workload"`
	N        int    `json:"n"`
	Rounds   int    `json:"rounds"`
	// Medians over the rounds.
	OffSeconds   float64 `json:"offMedianSeconds"`
	OnSeconds    float64 `json:"onMedianSeconds"`
	OffOpsPerSec float64 `json:"offMedianOpsPerSec"`
	OnOpsPerSec  float64 `json:"onMedianOpsPerSec"`
	// Overhead is benchutil.Median(ON seconds) / benchutil.Median(OFF seconds).
	Overhead float64 `json:"overhead"`
	// Target is the highest acceptable overhead; 0 means none.
	Target    float64 `json:"target,omitempty"`
	TargetMet *bool   `json:"targetMet,omitempty"`
	// EventsPerSec is the median over ON runs of events received by the
	// sensor's user space divided by the storm's duration.
	EventsPerSec float64 `json:"eventsPerSecDelivered"`
	// Dropped and Lost are totals over the ON runs. Dropped: ring buffer
	// full + queue dropped + decode errors. Lost: expected events (one per
	// operation of ExpectKind) the kernel never submitted.
	Dropped    uint64 `json:"dropped"`
	Lost       uint64 `json:"lost"`
	ExpectKind string `json:"expectKind,omitempty"`
	// LossFree is false when events were dropped or lost in a run that
	// delivered fewer than lossFreeRate events per second.
	LossFree bool `json:"lossFree"`
	// Where the time goes, from medians: the extra wall time per operation;
	// the extra system time loadgen (and the children it reaps) spent per
	// operation, where in-kernel sensor work lands; harrier's CPU time per
	// ON run beyond an idle run, and that as a share of one CPU over the storm.
	ExtraMicrosPerOp    float64     `json:"extraMicrosPerOp"`
	ExtraSysMicrosPerOp float64     `json:"extraLoadgenSysMicrosPerOp"`
	SensorCPUSeconds    float64     `json:"sensorStormCPUSeconds"`
	SensorCPUShare      float64     `json:"sensorStormCPUShare"`
	Runs                []runRecord `json:"runs"`
}

func newReport(o options, env *benchEnv) *report {
	r := &report{
		Started:    time.Now().UTC(),
		CPUs:       runtime.NumCPU(),
		Harrier:    o.harrier,
		Loadgen:    o.loadgen,
		Rounds:     o.rounds,
		Warmup:     o.warmup,
		N:          map[string]int{},
		ExtraWatch: env.extraWatch,
		Floor:      o.floor,
	}
	for _, w := range o.workloads {
		r.N[w.name] = o.n[w.name]
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		r.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.LoadAvg = strings.TrimSpace(string(b))
	}
	return r
}

func summarize(w workload, n int, runs []runRecord, idleCPU float64) result {
	res := result{Workload: w.name, N: n, Target: w.target, ExpectKind: w.expectKind, LossFree: true, Runs: runs}
	var offS, onS, offOps, onOps, evs, offSys, onSys, sensorCPU []float64
	for _, r := range runs {
		if !r.SensorOn {
			offS = append(offS, r.Seconds)
			offOps = append(offOps, r.OpsPerSec)
			offSys = append(offSys, r.LoadgenSysSeconds)
			continue
		}
		onSys = append(onSys, r.LoadgenSysSeconds)
		sensorCPU = append(sensorCPU, r.SensorCPUSeconds)
		res.Rounds++
		onS = append(onS, r.Seconds)
		onOps = append(onOps, r.OpsPerSec)
		evs = append(evs, r.EventsPerSec)
		res.Dropped += r.Dropped
		res.Lost += r.Lost
		if r.EventsPerSec < lossFreeRate && r.Dropped+r.Lost > 0 {
			res.LossFree = false
		}
	}
	res.OffSeconds, res.OnSeconds = benchutil.Median(offS), benchutil.Median(onS)
	res.OffOpsPerSec, res.OnOpsPerSec = benchutil.Median(offOps), benchutil.Median(onOps)
	res.EventsPerSec = benchutil.Median(evs)
	if res.OffSeconds > 0 {
		res.Overhead = res.OnSeconds / res.OffSeconds
	}
	res.ExtraMicrosPerOp = (res.OnSeconds - res.OffSeconds) / float64(n) * 1e6
	res.ExtraSysMicrosPerOp = (benchutil.Median(onSys) - benchutil.Median(offSys)) / float64(n) * 1e6
	res.SensorCPUSeconds = max(0, benchutil.Median(sensorCPU)-idleCPU)
	if res.OnSeconds > 0 {
		res.SensorCPUShare = res.SensorCPUSeconds / res.OnSeconds
	}
	if w.target > 0 {
		met := res.Overhead <= w.target
		res.TargetMet = &met
	}
	return res
}

func (r *report) allPass() bool {
	for _, res := range r.Results {
		if !res.LossFree || (res.TargetMet != nil && !*res.TargetMet) {
			return false
		}
	}
	return true
}

// verdict is the table's last column.
func (r result) verdict() string {
	var miss []string
	if r.TargetMet != nil && !*r.TargetMet {
		miss = append(miss, "overhead")
	}
	if !r.LossFree {
		miss = append(miss, "lost events")
	}
	if len(miss) > 0 {
		return "MISS: " + strings.Join(miss, ", ")
	}
	return "ok"
}

func writeTable(w io.Writer, r *report) error {
	var b strings.Builder
	fmt.Fprintf(&b, "\nHarrier sensor overhead: %d rounds per workload (OFF/ON interleaved), medians; kernel %s, %d CPUs\n\n",
		r.Rounds, r.Kernel, r.CPUs)
	if r.Floor {
		b.WriteString("FLOOR MODE: ON runs keep the syscall hooks attached but report no syscall, so syscall events\n" +
			"are missing by design; the ratio is the cost of the attach point alone.\n\n")
	}
	b.WriteString("| workload | ops | off ops/s | on ops/s | overhead ratio | target | events/s delivered | dropped | lost | verdict |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, res := range r.Results {
		target, lost := "—", "—"
		if res.Target > 0 {
			target = fmt.Sprintf("≤ %.2f", res.Target)
		}
		if res.ExpectKind != "" {
			lost = fmt.Sprint(res.Lost)
		}
		fmt.Fprintf(&b, "| %s | %d | %.0f | %.0f | %.3f | %s | %.0f | %d | %s | %s |\n",
			res.Workload, res.N, res.OffOpsPerSec, res.OnOpsPerSec, res.Overhead, target,
			res.EventsPerSec, res.Dropped, lost, res.verdict())
	}
	b.WriteString("\n| workload | extra wall µs/op | extra loadgen sys µs/op | sensor storm CPU s | sensor CPU / storm |\n")
	b.WriteString("|---|---:|---:|---:|---:|\n")
	for _, res := range r.Results {
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %.3f | %.0f%% |\n", res.Workload, res.ExtraMicrosPerOp,
			res.ExtraSysMicrosPerOp, res.SensorCPUSeconds, 100*res.SensorCPUShare)
	}
	fmt.Fprintf(&b, "\noverhead = benchutil.Median(ON s)/benchutil.Median(OFF s); events/s = sensor-received events / storm seconds (median of ON runs);\n"+
		"dropped = ring buffer full + queue dropped + decode errors, lost = expected events never submitted (both summed over ON runs);\n"+
		"no event may be dropped or lost by a run delivering under %d events/s.\n"+
		"Second table (medians): in-kernel sensor work shows as extra loadgen system time; sensor storm CPU is harrier's\n"+
		"user+system time per ON run less an idle run's (%.3f s), competing with loadgen for the %d CPUs.\n",
		lossFreeRate, r.SensorIdleCPUSeconds, r.CPUs)
	_, err := io.WriteString(w, b.String())
	return err
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }
func round0(x float64) float64 { return math.Round(x) }
