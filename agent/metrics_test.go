package agent

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/kube/audit"
)

// TestAuditCollector posts accepted, unauthenticated and malformed requests
// to a real receiver and checks what its metrics say.
func TestAuditCollector(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := make(chan *api.Event, 8)
	r := &audit.Receiver{Out: out, Token: &audit.TokenFile{Path: tokenFile}, Log: slog.New(slog.DiscardHandler)}
	list := `{"apiVersion":"audit.k8s.io/v1","kind":"EventList","items":[` +
		`{"apiVersion":"audit.k8s.io/v1","kind":"Event","auditID":"a1","stage":"ResponseComplete","verb":"get"},` +
		`{"apiVersion":"audit.k8s.io/v1","kind":"Event","auditID":"a2","stage":"ResponseComplete","verb":"list"}]}`
	for _, tc := range []struct {
		token, body string
		code        int
	}{
		{"s3cret", list, http.StatusOK},
		{"wrong", list, http.StatusUnauthorized},
		{"s3cret", `{"kind":"PodList"}`, http.StatusBadRequest},
	} {
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+tc.token)
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, req)
		if rec.Code != tc.code {
			t.Fatalf("POST with token %q: %d %s, want %d", tc.token, rec.Code, rec.Body, tc.code)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newAuditCollector(r, nil, func() (int, int) { return len(out), cap(out) }))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			got[name] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	want := map[string]float64{
		"harrier_audit_events_total{source=webhook}":   2,
		"harrier_audit_rejected_total{source=webhook}": 2,
		"harrier_audit_dropped_total{source=webhook}":  0,
		"harrier_audit_queue_depth":                    2,
		"harrier_audit_queue_capacity":                 8,
	}
	for name, v := range want {
		if g, ok := got[name]; !ok || g != v {
			t.Errorf("%s = %v (present %t), want %v; all: %v", name, g, ok, v, got)
		}
	}
	if _, ok := got["harrier_audit_events_total{source=log}"]; ok {
		t.Errorf("a log source is reported without a tailer: %v", got)
	}
}

// TestMetricsReadyz: the agent's /readyz answers 503 until the pipeline is
// ready, 200 after; /livez and /metrics answer throughout.
func TestMetricsReadyz(t *testing.T) {
	var ready atomic.Bool
	h := metricsHandler(ready.Load, newAlertLatency())
	get := func(path string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code
	}
	if got := get("/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("readyz before ready: %d, want 503", got)
	}
	if got, gotMetrics := get("/livez"), get("/metrics"); got != http.StatusOK || gotMetrics != http.StatusOK {
		t.Errorf("livez %d, metrics %d before ready, want 200", got, gotMetrics)
	}
	ready.Store(true)
	if got := get("/readyz"); got != http.StatusOK {
		t.Errorf("readyz once ready: %d, want 200", got)
	}
}
