package backend

import (
	"cmp"
	"fmt"
	"html/template"
	"slices"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// consoleFuncs are the template functions of the investigation pages
// (incidents, alert explanation, agents, overview). None returns
// template.HTML: every value stays escaped by context.
func consoleFuncs() template.FuncMap {
	return template.FuncMap{
		"tm": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		},
		"span":      func(a, b time.Time) string { return fmtSpan(b.Sub(a)) },
		"ago":       fmtSpan,
		"tactics":   func() []string { return tacticOrder },
		"has":       func(list []string, s string) bool { return slices.Contains(list, s) },
		"printable": quoteIfBinary,
		"activity":  activity,
		"rfc3339":   func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"milli":     func(cores float64) float64 { return cores * 1000 },
		"mib":       func(b uint64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) },
	}
}

// fmtSpan says a duration the way a person reads it: 42s, 5m10s, 3h05m,
// 2d4h.
func fmtSpan(d time.Duration) string {
	d = d.Abs().Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", d/time.Second)
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", d/time.Minute, d%time.Minute/time.Second)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", d/time.Hour, d%time.Hour/time.Minute)
	}
	return fmt.Sprintf("%dd%dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
}

// Overview is what the overview page shows for a time range.
type Overview struct {
	Since, Until time.Time
	Bucket       time.Duration
	// Alerts and Incidents count, per bucket (oldest first), per severity
	// (index api.Severity).
	Alerts, Incidents [][6]int
	AlertTotal        int
	IncidentTotal     int
	TopDetections     []Count
	TopWorkloads      []Count
	// Matrix is ATT&CK: per tactic (kill-chain order), its techniques.
	Matrix []TacticCount
}

// Count is one row of a top list.
type Count struct {
	Name string
	N    int
}

// TacticCount is one column of the ATT&CK matrix.
type TacticCount struct {
	Tactic     string
	N          int
	Techniques []Count // "T1059.004 Unix Shell"
}

const overviewTop = 10

// overview aggregates the alerts first seen in [since, until) and the
// incidents that started then, in buckets.
func (x *incidentIndex) overview(since, until time.Time, buckets int) Overview {
	o := Overview{Since: since, Until: until, Bucket: until.Sub(since) / time.Duration(buckets),
		Alerts: make([][6]int, buckets), Incidents: make([][6]int, buckets)}
	bucketOf := func(ns int64) (int, bool) {
		t := time.Unix(0, ns)
		if t.Before(since) || !t.Before(until) || o.Bucket <= 0 {
			return 0, false
		}
		return min(int(t.Sub(since)/o.Bucket), buckets-1), true
	}
	dets, works := map[string]int{}, map[string]int{}
	tactics := map[string]map[string]int{}
	x.mu.RLock()
	defer x.mu.RUnlock()
	for _, h := range x.alerts {
		i, ok := bucketOf(h.first)
		if !ok {
			continue
		}
		o.Alerts[i][min(int(h.sev), 5)]++
		o.AlertTotal++
		dets[h.detection]++
		works[h.workload]++
		for _, m := range h.mitre {
			tactic, tech, _ := strings.Cut(m, "\x00")
			if tactic == "" {
				continue
			}
			if tactics[tactic] == nil {
				tactics[tactic] = map[string]int{}
			}
			tactics[tactic][strings.ReplaceAll(strings.TrimSuffix(tech, "\x00"), "\x00", " ")]++
		}
	}
	for _, inc := range x.incidents {
		i, ok := bucketOf(inc.first.UnixNano())
		if !ok {
			continue
		}
		sev, _ := inc.rank()
		o.Incidents[i][min(int(sev), 5)]++
		o.IncidentTotal++
	}
	o.TopDetections, o.TopWorkloads = topCounts(dets, overviewTop), topCounts(works, overviewTop)
	for t, techs := range tactics {
		tc := TacticCount{Tactic: t, Techniques: topCounts(techs, len(techs))}
		for _, c := range tc.Techniques {
			tc.N += c.N
		}
		o.Matrix = append(o.Matrix, tc)
	}
	slices.SortFunc(o.Matrix, func(a, b TacticCount) int {
		return cmp.Or(cmp.Compare(tacticRank(a.Tactic), tacticRank(b.Tactic)), strings.Compare(a.Tactic, b.Tactic))
	})
	return o
}

func topCounts(m map[string]int, n int) []Count {
	out := make([]Count, 0, len(m))
	for k, v := range m {
		out = append(out, Count{k, v})
	}
	slices.SortFunc(out, func(a, b Count) int { return cmp.Or(cmp.Compare(b.N, a.N), strings.Compare(a.Name, b.Name)) })
	return out[:min(n, len(out))]
}

// Chart is a stacked bar chart drawn as SVG by the template: no script.
type Chart struct {
	Title         string
	Width, Height int
	Bars          []ChartRect
	Axis          []ChartLabel
	Legend        []ChartLabel
	Max           int
}

// ChartRect is one severity's part of one bar.
type ChartRect struct {
	X, Y, W, H int
	Class      string
	Tip        string
}

// ChartLabel is a text on the chart.
type ChartLabel struct {
	X, Y  int
	Text  string
	Class string
}

const (
	chartW, chartH = 640, 180
	chartLeft      = 36
	chartBottom    = 20
)

// stackedChart draws counts per bucket per severity, most severe on top.
func stackedChart(title string, counts [][6]int, since time.Time, bucket time.Duration) Chart {
	c := Chart{Title: title, Width: chartW, Height: chartH}
	for _, b := range counts {
		total := 0
		for _, n := range b {
			total += n
		}
		c.Max = max(c.Max, total)
	}
	scale := max(c.Max, 1)
	plotH := chartH - chartBottom - 10
	bw := (chartW - chartLeft) / max(len(counts), 1)
	for i, b := range counts {
		x := chartLeft + i*bw
		y := chartH - chartBottom
		for sev := 0; sev <= 5; sev++ {
			if b[sev] == 0 {
				continue
			}
			h := max(1, b[sev]*plotH/scale)
			y -= h
			name := api.Severity(sev).Name()
			c.Bars = append(c.Bars, ChartRect{X: x + 1, Y: y, W: max(bw-2, 1), H: h, Class: "s-" + name,
				Tip: fmt.Sprintf("%s: %d %s", since.Add(time.Duration(i)*bucket).UTC().Format("Jan 2 15:04Z"), b[sev], name)})
		}
		if step := max(len(counts)/6, 1); i%step == 0 {
			c.Axis = append(c.Axis, ChartLabel{X: x, Y: chartH - 5, Text: since.Add(time.Duration(i) * bucket).UTC().Format("Jan 2 15:04")})
		}
	}
	c.Axis = append(c.Axis, ChartLabel{X: 2, Y: 16, Text: fmt.Sprint(c.Max)}, ChartLabel{X: 2, Y: chartH - chartBottom, Text: "0"})
	for i, sev := range []api.Severity{api.Severity_SEVERITY_CRITICAL, api.Severity_SEVERITY_HIGH, api.Severity_SEVERITY_MEDIUM, api.Severity_SEVERITY_LOW, api.Severity_SEVERITY_INFO} {
		c.Legend = append(c.Legend, ChartLabel{X: chartW - 80, Y: 14 + 13*i, Text: sev.Name(), Class: "s-" + sev.Name()})
	}
	return c
}
