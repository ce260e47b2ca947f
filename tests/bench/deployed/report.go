package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/harrier-sec/harrier/tests/bench/internal/benchutil"
)

// report is the JSON written to -out.
type report struct {
	Started  time.Time      `json:"started"`
	Finished time.Time      `json:"finished"`
	Kernel   string         `json:"kernel"`
	CPUs     int            `json:"cpus"`
	LoadAvg  string         `json:"loadavgAtStart,omitempty"`
	Rounds   int            `json:"rounds"`
	Monitors []string       `json:"monitors"`
	N        map[string]int `json:"n"`
	ABConc   int            `json:"abConcurrency"`
	Rows     []row          `json:"rows"`
	Runs     []runRecord    `json:"runs"`
}

// row is one storm under one monitor, from medians over the rounds.
type row struct {
	Storm   string `json:"storm"`
	Monitor string `json:"monitor"`
	Runs    int    `json:"runs"`
	// Medians.
	Seconds    float64 `json:"medianSeconds"`
	OpsPerSec  float64 `json:"medianOpsPerSec"`
	P99Ms      float64 `json:"medianP99Ms,omitempty"`
	TotalCPU   float64 `json:"medianTotalCPUSeconds"`
	MonitorCPU float64 `json:"medianMonitorCPUSeconds"`
	// MonitorCPUPerOp is MonitorCPU per operation (request for nginx), µs.
	MonitorCPUPerOp float64 `json:"monitorCPUMicrosPerOp"`
	IdleRSS         int64   `json:"medianIdleRSSBytes,omitempty"`
	StormRSS        int64   `json:"medianStormRSSBytes,omitempty"`
	// PeakRSS is the highest high-water mark over the runs.
	PeakRSS int64 `json:"maxPeakRSSBytes,omitempty"`
	// BackendPeakRSS: the agent's backend, highest over the runs.
	BackendPeakRSS int64 `json:"maxBackendPeakRSSBytes,omitempty"`
	// Ratios against no monitor: median wall seconds, median total CPU
	// seconds (workload + monitor), median requests/s and p99 (nginx).
	Wall     float64  `json:"wallRatio"`
	CPU      float64  `json:"totalCPURatio"`
	RPS      float64  `json:"rpsRatio,omitempty"`
	P99      float64  `json:"p99Ratio,omitempty"`
	Dropped  float64  `json:"dropped,omitempty"`
	Targeted bool     `json:"targeted"`
	Misses   []string `json:"misses,omitempty"`
}

func newReport(o options) *report {
	r := &report{Started: time.Now().UTC(), CPUs: runtime.NumCPU(), Rounds: o.rounds, Monitors: o.monitors,
		N: map[string]int{}, ABConc: o.abConcurrency}
	for _, s := range o.storms {
		r.N[s.Name] = o.n[s.Name]
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

// add summarizes one storm's runs into a row per monitor.
func (rep *report) add(s storm, runs []runRecord) {
	rep.Runs = append(rep.Runs, runs...)
	var base row
	for _, mon := range rep.Monitors {
		var secs, ops, p99, total, mcpu, idle, srss []float64
		rw := row{Storm: s.Name, Monitor: mon, Targeted: mon == monAgent || mon == monRun}
		var dropped float64
		for _, r := range runs {
			if r.Monitor != mon {
				continue
			}
			rw.Runs++
			secs = append(secs, r.Seconds)
			ops = append(ops, r.OpsPerSec)
			p99 = append(p99, r.P99Ms)
			total = append(total, r.totalCPU())
			mcpu = append(mcpu, r.MonitorCPUSeconds)
			idle = append(idle, float64(r.IdleRSS))
			srss = append(srss, float64(r.StormRSS))
			rw.PeakRSS = max(rw.PeakRSS, r.PeakRSS)
			rw.BackendPeakRSS = max(rw.BackendPeakRSS, r.BackendPeakRSS)
			if r.Dropped != nil {
				dropped += *r.Dropped
			}
		}
		rw.Seconds, rw.OpsPerSec, rw.P99Ms = benchutil.Median(secs), benchutil.Median(ops), benchutil.Median(p99)
		rw.TotalCPU, rw.MonitorCPU = benchutil.Median(total), benchutil.Median(mcpu)
		rw.IdleRSS, rw.StormRSS = int64(benchutil.Median(idle)), int64(benchutil.Median(srss))
		rw.Dropped = dropped
		if n := rep.N[s.Name]; n > 0 {
			rw.MonitorCPUPerOp = rw.MonitorCPU / float64(n) * 1e6
		}
		if mon == monNone {
			base = rw
		}
		rw.Wall = ratio(rw.Seconds, base.Seconds)
		rw.CPU = ratio(rw.TotalCPU, base.TotalCPU)
		if s.isNginx() {
			rw.RPS = ratio(rw.OpsPerSec, base.OpsPerSec)
			rw.P99 = ratio(rw.P99Ms, base.P99Ms)
		}
		if rw.Targeted {
			rw.Misses = misses(s, rw)
		}
		rep.Rows = append(rep.Rows, rw)
	}
}

// misses lists the targets a harrier agent or run row missed.
func misses(s storm, r row) []string {
	var m []string
	if s.Wall > 0 && r.Wall > s.Wall {
		m = append(m, fmt.Sprintf("wall > %.2f", s.Wall))
	}
	if s.CPU > 0 && r.CPU > s.CPU {
		m = append(m, fmt.Sprintf("CPU > %.2f", s.CPU))
	}
	if s.RPS > 0 && r.RPS < s.RPS {
		m = append(m, fmt.Sprintf("req/s < %.2f", s.RPS))
	}
	if s.P99 > 0 && r.P99 > s.P99 {
		m = append(m, fmt.Sprintf("p99 > %.2f", s.P99))
	}
	if r.IdleRSS > idleRSSTarget {
		m = append(m, fmt.Sprintf("idle RSS > %d MiB", idleRSSTarget>>20))
	}
	if r.PeakRSS > stormRSSTarget {
		m = append(m, fmt.Sprintf("peak RSS > %d MiB", stormRSSTarget>>20))
	}
	return m
}

// targets is the table's target column for a harrier agent or run row.
func targets(s storm) string {
	var t []string
	if s.Wall > 0 {
		t = append(t, fmt.Sprintf("wall ≤ %.2f", s.Wall))
	}
	if s.CPU > 0 {
		t = append(t, fmt.Sprintf("CPU ≤ %.2f", s.CPU))
	}
	if s.RPS > 0 {
		t = append(t, fmt.Sprintf("req/s ≥ %.2f", s.RPS))
	}
	if s.P99 > 0 {
		t = append(t, fmt.Sprintf("p99 ≤ %.2f", s.P99))
	}
	t = append(t, fmt.Sprintf("RSS ≤ %d/%d MiB", idleRSSTarget>>20, stormRSSTarget>>20))
	return strings.Join(t, ", ")
}

func (rep *report) allPass() bool {
	return !slices.ContainsFunc(rep.Rows, func(r row) bool { return len(r.Misses) > 0 })
}

func writeTable(w io.Writer, rep *report) error {
	storms := map[string]storm{}
	for _, s := range allStorms("") {
		storms[s.Name] = s
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nHarrier as deployed: %d rounds per storm (every monitor once per round, order rotated), medians; kernel %s, %d CPUs, load average at start %s\n\n",
		rep.Rounds, rep.Kernel, rep.CPUs, rep.LoadAvg)
	b.WriteString("| storm | monitor | ops/s | wall ratio | total CPU ratio | monitor CPU s (µs/op) | p99 ms (ratio) | RSS idle / storm / peak MiB | dropped | targets | verdict |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n")
	for _, r := range rep.Rows {
		s := storms[r.Storm]
		label := monitorLabel(r.Monitor)
		p99, rss, dropped, tgt, verdict := "—", "—", "—", "—", "—"
		if s.isNginx() {
			p99 = fmt.Sprintf("%.2f (%.2f)", r.P99Ms, r.P99)
		}
		if r.Monitor != monNone {
			rss = fmt.Sprintf("%.0f / %.0f / %.0f", mib(r.IdleRSS), mib(r.StormRSS), mib(r.PeakRSS))
		}
		if r.Monitor == monAgent || r.Monitor == monRun {
			dropped = fmt.Sprintf("%.0f", r.Dropped)
		}
		if r.Targeted {
			tgt, verdict = targets(s), "ok"
			if len(r.Misses) > 0 {
				verdict = "MISS: " + strings.Join(r.Misses, ", ")
			}
		}
		ops := fmt.Sprintf("%.0f", r.OpsPerSec)
		if s.isNginx() {
			ops = fmt.Sprintf("%.0f req/s (%.2f)", r.OpsPerSec, r.RPS)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.3f | %.3f | %.3f (%.1f) | %s | %s | %s | %s | %s |\n",
			r.Storm, label, ops, r.Wall, r.CPU, r.MonitorCPU, r.MonitorCPUPerOp, p99, rss, dropped, tgt, verdict)
	}
	b.WriteString("\nwall ratio = median storm seconds / no monitor's; total CPU ratio = benchutil.Median(workload CPU + monitor CPU) / no monitor's workload CPU.\n" +
		"Workload CPU: loadgen's user+system time with its children (in-kernel BPF and audit work lands there), or ab's plus nginx's.\n" +
		"Monitor CPU: harrier agent + backend, harrier run, auditd + kauditd, or harrier events, from just before the storm until quiet after it\n" +
		"(and per operation, idle time in that window included).\n" +
		"RSS: the monitor's (the agent's, not the backend's) before the storm (median), at its end (median), and its high-water mark (max).\n" +
		"dropped: the sensor's kernel ring-buffer-full and queue drops over the runs. Targets apply to harrier agent and run (issue 22);\n" +
		"the unwatched opens' target is the attach point's floor + 2 % (tests/bench/overhead.sh -floor).\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func ratio(x, base float64) float64 {
	if base <= 0 {
		return 0
	}
	return x / base
}
