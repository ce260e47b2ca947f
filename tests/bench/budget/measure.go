package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/tests/bench/internal/auditgen"
)

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
		"harrier_sensor_kernel_shed_reads_total": "kernel_shed_reads", "harrier_sensor_kernel_shed_repeats_total": "kernel_shed_repeats",
		"harrier_sensor_queue_dropped_total": "queue", "harrier_analytics_rate_limited_total": "alert_rate_limited",
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
