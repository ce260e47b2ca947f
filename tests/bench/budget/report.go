package main

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/harrier-sec/harrier/tests/bench/internal/auditgen"
)

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
	fmt.Fprintln(w, "| load | offered/s | achieved/s | pipeline events/s | agent CPU | RSS peak | heap peak | lost: ring / queue | shed: kernel reads / kernel repeats / queue | raw events not spooled (cap) | alert in spool p50 / p99 (alerts) | alert at backend p50 / p99 (missing) | workload slowdown | OOM |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		slow := slowdown(r)
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %.0f | %.0fm | %.0f MiB | %.0f MiB | %.0f / %.0f | %.0f / %.0f / %.0f | %.0f | ≤ %.0f / ≤ %.0f ms (%.0f) | %.0f / %.0f ms (%d) | %s | %d |\n",
			r.Workload, r.Rate, r.AchievedRate, r.EventsPerSec, r.AgentCores*1000, r.RSSPeakMiB, r.HeapPeakMiB,
			r.Drops["kernel_ring"], r.Drops["queue"], r.Drops["kernel_shed_reads"], r.Drops["kernel_shed_repeats"], r.Drops["shed_fork_exit"], r.Drops["spool_capped"],
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
