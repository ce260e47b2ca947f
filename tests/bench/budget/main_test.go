package main

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseSteps(t *testing.T) {
	tests := []struct {
		spec    string
		want    []step
		wantErr string
	}{
		{"containers:5,audit:2000", []step{{"containers", 5}, {"audit", 2000}}, ""},
		{" exec:200 , storm:0", []step{{"exec", 200}, {"storm", 0}}, ""},
		{"containers:0.5", []step{{"containers", 0.5}}, ""},
		{"audit", nil, "bad step"},
		{"audit:fast", nil, "bad step"},
		{"kubelet:5", nil, "bad step"},
		{"audit:0", nil, "positive"},
		{"containers:-1", nil, "positive"},
		{"audit:NaN", nil, "positive"},
		{"audit:+Inf", nil, "positive"},
		{"", nil, "bad step"},
	}
	for _, tt := range tests {
		got, err := parseSteps(tt.spec)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseSteps(%q) = %v, %v; want an error with %q", tt.spec, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseSteps(%q) = %v, %v; want %v", tt.spec, got, err, tt.want)
		}
	}
}

// TestDefaultSteps: the default list parses and offers both new workloads.
func TestDefaultSteps(t *testing.T) {
	steps, err := parseSteps(defaultSteps)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"containers", "audit", "storm"} {
		if !hasWorkload(steps, w) {
			t.Errorf("default steps lack %s: %v", w, steps)
		}
	}
}

func TestLatencies(t *testing.T) {
	t0 := time.Unix(1000, 0)
	want := map[string]time.Time{"a": t0, "b": t0, "c": t0}
	seen := map[string]time.Time{"a": t0.Add(300 * time.Millisecond), "b": t0.Add(100 * time.Millisecond), "x": t0}
	lat, missing := latencies(want, seen)
	if !reflect.DeepEqual(lat, []float64{100, 300}) || missing != 1 {
		t.Errorf("latencies = %v, %d missing; want [100 300], 1", lat, missing)
	}
	if p := percentile(lat, 0.99); p != 300 {
		t.Errorf("p99 = %v, want 300", p)
	}
}

func TestHistogramQuantile(t *testing.T) {
	key := func(le string) string { return alertSpoolLatency + `_bucket{le="` + le + `"}` }
	before := map[string]float64{key("0.1"): 5, key("0.5"): 5, key("1"): 5, key("+Inf"): 5, alertSpoolLatency + "_count": 5}
	// Between the scrapes: 90 observations ≤ 0.1 s, 8 in (0.1, 0.5], 2 in (0.5, 1].
	after := map[string]float64{key("0.1"): 95, key("0.5"): 103, key("1"): 105, key("+Inf"): 105, alertSpoolLatency + "_count": 105}
	for _, tc := range []struct{ q, want float64 }{{0.5, 0.1}, {0.9, 0.1}, {0.95, 0.5}, {0.99, 1}} {
		if got := histogramQuantile(before, after, alertSpoolLatency, tc.q); got != tc.want {
			t.Errorf("q%.2f = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := histogramQuantile(after, after, alertSpoolLatency, 0.5); got != 0 {
		t.Errorf("no observations: %v, want 0", got)
	}
}

func TestCPUWeights(t *testing.T) {
	for _, tc := range []struct {
		cores          float64
		shares, weight int
	}{
		{0.36, 368, 14}, // the DaemonSet's request
		{1.64, 1679, 64},
		{1, 1024, 39},
		{0.001, 2, 1}, // the kubelet's floor
	} {
		if got := cpuShares(tc.cores); got != tc.shares {
			t.Errorf("cpuShares(%v) = %d, want %d", tc.cores, got, tc.shares)
		}
		if got := cpuWeight(cpuShares(tc.cores)); got != tc.weight {
			t.Errorf("cpuWeight(%d) = %d, want %d", cpuShares(tc.cores), got, tc.weight)
		}
	}
}
