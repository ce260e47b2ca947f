package backend

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// Metrics holds the backend's Prometheus metrics and writes them in the text
// exposition format (0.0.4).
//
// Why hand-written: the module's go.sum does not yet carry
// github.com/prometheus/client_golang's own dependencies, and this package
// may not change go.mod. The surface is kept to what the backend needs
// (labelled counters, one histogram) so moving to client_golang later only
// changes this file.
type Metrics struct {
	mu       sync.Mutex
	counters map[string]*counterVec
	order    []string
	ingest   histogram
}

type counterVec struct {
	help   string
	labels []string
	values map[string]uint64 // key: label values joined by \xff
}

type histogram struct {
	bounds []float64
	counts []uint64 // per bucket, not cumulative; the last is +Inf
	sum    float64
	n      uint64
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
)

// NewMetrics makes an empty metrics set. Pass the same one to the store and
// the API so /metrics shows both.
func NewMetrics() *Metrics {
	m := &Metrics{counters: map[string]*counterVec{}}
	m.def(metricBatches, "Batches ingested (including heartbeats).")
	m.def(metricRecords, "Records received, by class (duplicates included).", "class")
	m.def(metricDuplicates, "Records received again and acked without being stored twice.")
	m.def(metricAlertsNew, "Alerts stored under a new alert ID.")
	m.def(metricAlertsUpdated, "Alert records that updated an existing alert ID.")
	m.def(metricEvents, "Raw events stored in the recent-events ring.")
	m.def(metricGaps, "Records agents reported evicted before delivery, by class.", "class")
	m.def(metricIngestErrors, "Batches refused or failed.")
	m.def(metricAPIRequests, "HTTP requests, by route pattern and status code.", "path", "code")
	m.ingest = histogram{
		bounds: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}
	m.ingest.counts = make([]uint64, len(m.ingest.bounds)+1)
	return m
}

func (m *Metrics) def(name, help string, labels ...string) {
	m.counters[name] = &counterVec{help: help, labels: labels, values: map[string]uint64{}}
	m.order = append(m.order, name)
	if len(labels) == 0 {
		m.counters[name].values[""] = 0 // show unlabelled counters from the start
	}
}

// add is nil-safe so a store or API without metrics needs no branches.
func (m *Metrics) add(name string, n uint64, labelValues ...string) {
	if m == nil || n == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.counters[name]
	if c == nil || len(labelValues) != len(c.labels) {
		return // a programming error; tests catch it by the missing series
	}
	c.values[strings.Join(labelValues, "\xff")] += n
}

func (m *Metrics) observeIngest(d time.Duration) {
	if m == nil {
		return
	}
	s := d.Seconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	i, _ := slices.BinarySearch(m.ingest.bounds, s)
	m.ingest.counts[i]++
	m.ingest.sum += s
	m.ingest.n++
}

// ingestStats is what one Ingest call did; the store reports it in one go.
type ingestStats struct {
	records       map[api.RecordClass]uint64
	gaps          map[api.RecordClass]uint64
	duplicates    uint64
	alertsNew     uint64
	alertsUpdated uint64
	events        uint64
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
	m.observeIngest(d)
}

// className is the label value for a record class: "alert", "event", ...
func className(c api.RecordClass) string {
	s, ok := api.RecordClass_name[int32(c)]
	if !ok {
		return strconv.Itoa(int(c))
	}
	return strings.ToLower(strings.TrimPrefix(s, "RECORD_CLASS_"))
}

// WriteTo writes every metric in the Prometheus text format.
func (m *Metrics) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: bufio.NewWriter(w)}
	m.mu.Lock()
	for _, name := range m.order {
		c := m.counters[name]
		fmt.Fprintf(cw, "# HELP %s %s\n# TYPE %s counter\n", name, c.help, name)
		keys := make([]string, 0, len(c.values))
		for k := range c.values {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(cw, "%s%s %d\n", name, labelPairs(c.labels, k), c.values[k])
		}
	}
	h := m.ingest
	fmt.Fprintf(cw, "# HELP %s Time to store one batch durably.\n# TYPE %s histogram\n", metricIngestSeconds, metricIngestSeconds)
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i]
		fmt.Fprintf(cw, "%s_bucket{le=\"%s\"} %d\n", metricIngestSeconds, strconv.FormatFloat(b, 'g', -1, 64), cum)
	}
	cum += h.counts[len(h.bounds)]
	fmt.Fprintf(cw, "%s_bucket{le=\"+Inf\"} %d\n", metricIngestSeconds, cum)
	fmt.Fprintf(cw, "%s_sum %s\n%s_count %d\n", metricIngestSeconds, formatFloat(h.sum), metricIngestSeconds, h.n)
	m.mu.Unlock()
	if cw.err != nil {
		return cw.n, fmt.Errorf("write metrics: %w", cw.err)
	}
	if err := cw.w.Flush(); err != nil {
		return cw.n, fmt.Errorf("write metrics: %w", err)
	}
	return cw.n, nil
}

// ServeHTTP serves /metrics.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = m.WriteTo(w) // the client went away; nothing to tell it
}

func labelPairs(names []string, key string) string {
	if len(names) == 0 {
		return ""
	}
	vals := strings.Split(key, "\xff")
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(n)
		b.WriteString(`="`)
		b.WriteString(labelEscaper.Replace(vals[i]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func formatFloat(f float64) string {
	if math.IsInf(f, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

type countingWriter struct {
	w   *bufio.Writer
	n   int64
	err error
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}
