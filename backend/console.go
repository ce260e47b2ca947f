package backend

import (
	"fmt"
	"html/template"
	"slices"
	"time"
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
