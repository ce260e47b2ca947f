package backend

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"

	"github.com/harrier-sec/harrier/api"
)

// Metrics holds the backend's Prometheus metrics in its own registry (no
// global default registry: no package-level state).
type Metrics struct {
	reg      *prometheus.Registry
	counters map[string]*prometheus.CounterVec
	ingest   prometheus.Histogram
	findings *prometheus.GaugeVec
}

// Metric names, one place so tests and docs agree.
const (
	metricBatches       = "harrier_backend_batches_total"
	metricRecords       = "harrier_backend_records_total"
	metricDuplicates    = "harrier_backend_duplicate_records_total"
	metricAlertsNew     = "harrier_backend_alerts_stored_total"
	metricAlertsUpdated = "harrier_backend_alerts_updated_total"
	metricEvents        = "harrier_backend_events_stored_total"
	metricGaps          = "harrier_backend_gap_records_total"
	metricIngestErrors  = "harrier_backend_ingest_errors_total"
	metricAPIRequests   = "harrier_backend_api_requests_total"
	metricIngestSeconds = "harrier_backend_ingest_duration_seconds"

	metricInventoryChunks    = "harrier_backend_inventory_chunks_total"
	metricInventoryRejected  = "harrier_backend_inventory_chunks_rejected_total"
	metricInventoryDropped   = "harrier_backend_inventory_pending_dropped_total"
	metricSnapshotsCompleted = "harrier_backend_inventory_snapshots_completed_total"
	metricFindings           = "harrier_backend_findings"
	metricLoginRefused       = "harrier_backend_login_refused_total"
)

// NewMetrics makes an empty metrics set. Pass the same one to the store and
// the API so /metrics shows both.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), counters: map[string]*prometheus.CounterVec{}}
	m.def(metricBatches, "Batches ingested (including heartbeats).")
	m.def(metricRecords, "Records received, by class (duplicates included).", "class")
	m.def(metricDuplicates, "Records received again and acked without being stored twice.")
	m.def(metricAlertsNew, "Alerts stored under a new alert ID.")
	m.def(metricAlertsUpdated, "Alert records that updated an existing alert ID.")
	m.def(metricEvents, "Raw events stored in the recent-events ring.")
	m.def(metricGaps, "Records agents reported evicted before delivery, by class.", "class")
	m.def(metricIngestErrors, "Batches refused or failed.")
	m.def(metricAPIRequests, "HTTP requests, by route pattern and status code.", "path", "code")
	m.def(metricInventoryChunks, "Inventory chunks received (duplicates of a record not included).")
	m.def(metricInventoryRejected, "Malformed inventory chunks, acked and not stored, by reason.", "reason")
	m.def(metricInventoryDropped, "Inventory chunks dropped before their snapshot became current, by reason (stale, superseded, pending_bytes).", "reason")
	m.def(metricSnapshotsCompleted, "Inventory snapshots that became a cluster's current one.")
	m.def(metricLoginRefused, "Console sign-ins refused, by reason (bad_credentials, rate_limited).", "reason")
	m.findings = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricFindings,
		Help: "Findings in the clusters' current snapshots, by severity.",
	}, []string{"severity"})
	for _, sev := range api.SeverityNames() {
		m.findings.WithLabelValues(sev) // show every severity from the start
	}
	m.ingest = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    metricIngestSeconds,
		Help:    "Time to store one batch durably.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
	m.reg.MustRegister(m.ingest, m.findings, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) def(name, help string, labels ...string) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	if len(labels) == 0 {
		c.WithLabelValues() // show unlabelled counters from the start
	}
	m.reg.MustRegister(c)
	m.counters[name] = c
}

// Registerer is where other parts of the backend (the exporters) register
// their metrics, so /metrics shows them too.
func (m *Metrics) Registerer() prometheus.Registerer { return m.reg }

// add is nil-safe so a store or API without metrics needs no branches.
func (m *Metrics) add(name string, n uint64, labelValues ...string) {
	if m == nil || n == 0 {
		return
	}
	if c, ok := m.counters[name]; ok {
		if ctr, err := c.GetMetricWithLabelValues(labelValues...); err == nil {
			ctr.Add(float64(n))
		}
	}
}

func (m *Metrics) observeIngest(d time.Duration) {
	if m != nil {
		m.ingest.Observe(d.Seconds())
	}
}

// ingestStats is what one Ingest call did; the store reports it in one go.
type ingestStats struct {
	records       map[api.RecordClass]uint64
	gaps          map[api.RecordClass]uint64
	duplicates    uint64
	alertsNew     uint64
	alertsUpdated uint64
	events        uint64
	invChunks     uint64
	invRejected   map[string]uint64 // by reason
	invDropped    map[string]uint64 // by reason
}

func (m *Metrics) recordIngest(st ingestStats, d time.Duration, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.add(metricIngestErrors, 1)
		return
	}
	m.add(metricBatches, 1)
	for c, n := range st.records {
		m.add(metricRecords, n, className(c))
	}
	for c, n := range st.gaps {
		m.add(metricGaps, n, className(c))
	}
	m.add(metricDuplicates, st.duplicates)
	m.add(metricAlertsNew, st.alertsNew)
	m.add(metricAlertsUpdated, st.alertsUpdated)
	m.add(metricEvents, st.events)
	m.add(metricInventoryChunks, st.invChunks)
	for reason, n := range st.invRejected {
		m.add(metricInventoryRejected, n, reason)
	}
	for reason, n := range st.invDropped {
		m.add(metricInventoryDropped, n, reason)
	}
	m.observeIngest(d)
}

// setFindings sets the findings gauges from the per-cluster counts by
// severity name ("SEVERITY_HIGH").
func (m *Metrics) setFindings(byCluster map[string]map[string]int) {
	if m == nil {
		return
	}
	sum := map[string]int{}
	for _, sevs := range byCluster {
		for name, n := range sevs {
			// A name this version does not know counts as unknown.
			sev, _ := api.ParseSeverity(name)
			sum[sev.Name()] += n
		}
	}
	m.findings.Reset()
	for _, sev := range api.SeverityNames() {
		sum[sev] += 0
	}
	for label, n := range sum {
		m.findings.WithLabelValues(label).Set(float64(n))
	}
}

// className is the label value for a record class: "alert", "event", ...
func className(c api.RecordClass) string {
	s, ok := api.RecordClass_name[int32(c)]
	if !ok {
		return strconv.Itoa(int(c))
	}
	return strings.ToLower(strings.TrimPrefix(s, "RECORD_CLASS_"))
}

// WriteTo writes the metrics in the Prometheus text format.
func (m *Metrics) WriteTo(w io.Writer) (int64, error) {
	families, err := m.reg.Gather()
	if err != nil {
		return 0, fmt.Errorf("gather metrics: %w", err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return 0, fmt.Errorf("encode metrics: %w", err)
		}
	}
	return b.WriteTo(w)
}

// ServeHTTP serves /metrics.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}
