package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/kube/admission"
	"github.com/harrier-sec/harrier/kube/audit"
	"github.com/harrier-sec/harrier/sensor/execontent"
	"github.com/harrier-sec/harrier/store"
	"github.com/harrier-sec/harrier/transport"
)

// DefaultMetricsAddr is where the agent serves /metrics unless configured.
const DefaultMetricsAddr = "127.0.0.1:9473"

// pipelineCollector reads every stage's counters at scrape time, so the hot
// paths keep their own cheap counters and nothing is double-counted.
type pipelineCollector struct {
	sensor    eventSource
	queue     func() (depth, capacity int)
	analytics *atomic.Pointer[analytics.Stats]
	capped    *atomic.Uint64
	spool     *store.Spool
	uplink    interface{ Stats() transport.ClientStats }
	descs     map[string]*prometheus.Desc
}

func newPipelineCollector(s eventSource, queue func() (int, int), as *atomic.Pointer[analytics.Stats], capped *atomic.Uint64, sp *store.Spool, up interface{ Stats() transport.ClientStats }) *pipelineCollector {
	c := &pipelineCollector{sensor: s, queue: queue, analytics: as, capped: capped, spool: sp, uplink: up, descs: map[string]*prometheus.Desc{}}
	for _, d := range []struct {
		name, help string
		labels     []string
	}{
		{"harrier_sensor_kernel_events_total", "Records the BPF programs submitted to the ring buffer, by event kind.", []string{"kind"}},
		{"harrier_sensor_kernel_ring_full_total", "Records lost in the kernel because the ring buffer was full, by event kind.", []string{"kind"}},
		{"harrier_sensor_kernel_file_filtered_total", "File events dismissed in the kernel (path not watched).", nil},
		{"harrier_sensor_kernel_shed_repeats_total", "Execs, forks and exits shed in the kernel while the ring buffer was over three quarters full, because their origin had done the same more than 16 times in that second.", []string{"kind"}},
		{"harrier_sensor_kernel_shed_reads_total", "Read-only opens of ordinary watched paths shed in the kernel while the ring buffer was over half full.", nil},
		{"harrier_sensor_kernel_env_unscanned_total", "Execs whose environment had more strings than the kernel looks at for LD_PRELOAD (64).", nil},
		{"harrier_sensor_received_total", "Records read from the ring buffer.", nil},
		{"harrier_sensor_decode_errors_total", "Records that could not be decoded.", nil},
		{"harrier_sensor_emitted_total", "Events handed to the pipeline.", nil},
		{"harrier_sensor_container_events_total", "Events handed to the pipeline that the sensor attributed to a container (they carry its ID), by event kind.", []string{"kind"}},
		{"harrier_sensor_queue_dropped_total", "Events dropped because the pipeline queue was full, by event kind.", []string{"kind"}},
		{"harrier_sensor_queue_shed_total", "Events shed first under overload (the queue past sensor.shedAt or older than sensor.maxQueueDelay): fork, exit and read-only opens of ordinary paths, by event kind.", []string{"kind"}},
		{"harrier_sensor_queue_age_seconds", "How long the oldest event in the sensor → analytics queue has waited (0 when the queue is empty).", nil},
		{"harrier_sensor_queue_depth", "Events waiting in the sensor → analytics queue.", nil},
		{"harrier_sensor_queue_capacity", "Capacity of the sensor → analytics queue.", nil},
		{"harrier_analytics_events_total", "Events evaluated by the detection engine.", nil},
		{"harrier_sensor_up", "1 while the sensor runs; 0 when this node cannot run it (the reason is in the log and the heartbeat).", nil},
		{"harrier_analytics_matches_total", "Rule and detector matches (before de-duplication).", nil},
		{"harrier_analytics_alerts_total", "New alerts raised.", nil},
		{"harrier_analytics_alert_updates_total", "Updates of open alerts sent (count and last seen grew).", nil},
		{"harrier_analytics_deduplicated_total", "Matches folded into an open alert.", nil},
		{"harrier_analytics_rate_limited_total", "New alerts suppressed by the per-detection rate limit.", []string{"detection"}},
		{"harrier_analytics_excepted_total", "Matches silenced by a rule exception.", nil},
		{"harrier_analytics_eval_errors_total", "Rule evaluations that failed.", nil},
		{"harrier_spool_events_capped_total", "Raw events not spooled because of spool.maxEventsPerSec (detection still saw them).", nil},
		{"harrier_spool_records", "Records in the spool, by class.", []string{"class"}},
		{"harrier_spool_bytes", "Live bytes in the spool, by class.", []string{"class"}},
		{"harrier_spool_oldest_age_seconds", "Age of the oldest spooled record, by class.", []string{"class"}},
		{"harrier_spool_appended_total", "Records appended, by class.", []string{"class"}},
		{"harrier_spool_acked_total", "Records acknowledged by the backend and deleted, by class.", []string{"class"}},
		{"harrier_spool_evicted_total", "Records evicted over the disk quota (reported upstream as gaps), by class.", []string{"class"}},
		{"harrier_spool_rejected_total", "Appends refused for lack of quota, by class.", []string{"class"}},
		{"harrier_spool_disk_bytes", "Disk space the spool's files occupy.", nil},
		{"harrier_spool_quota_bytes", "The spool's disk quota.", nil},
		{"harrier_uplink_connected", "1 while the uplink is connected to the backend.", nil},
		{"harrier_uplink_records_acked_total", "Records the backend acknowledged.", nil},
		{"harrier_uplink_batches_total", "Batches acknowledged (heartbeats included).", nil},
		{"harrier_uplink_bytes_sent_total", "Compressed bytes written to the backend.", nil},
		{"harrier_uplink_reconnects_total", "Reconnections to the backend.", nil},
	} {
		c.descs[d.name] = prometheus.NewDesc(d.name, d.help, d.labels, nil)
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *pipelineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *pipelineCollector) Collect(ch chan<- prometheus.Metric) {
	emit := func(name string, t prometheus.ValueType, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], t, v, labels...)
	}
	counter, gauge := prometheus.CounterValue, prometheus.GaugeValue
	depth, capacity := c.queue()
	st, err := c.sensor.Stats()
	up := 0.0
	if _, down := c.sensor.(unavailableSensor); !down {
		up = 1
	}
	emit("harrier_sensor_up", gauge, up)
	if err == nil {
		age := st.QueueHeadAge
		if depth == 0 {
			age = 0 // the sensor's last look is stale
		}
		emit("harrier_sensor_queue_age_seconds", gauge, age.Seconds())
		for k, v := range st.KernelSubmitted {
			emit("harrier_sensor_kernel_events_total", counter, float64(v), k)
		}
		for k, v := range st.KernelRingFull {
			emit("harrier_sensor_kernel_ring_full_total", counter, float64(v), k)
		}
		for k, v := range st.KernelShedRepeats {
			emit("harrier_sensor_kernel_shed_repeats_total", counter, float64(v), k)
		}
		for k, v := range st.QueueDropped {
			emit("harrier_sensor_queue_dropped_total", counter, float64(v), k)
		}
		for k, v := range st.QueueShed {
			emit("harrier_sensor_queue_shed_total", counter, float64(v), k)
		}
		for k, v := range st.InContainer {
			emit("harrier_sensor_container_events_total", counter, float64(v), k)
		}
		emit("harrier_sensor_kernel_file_filtered_total", counter, float64(st.KernelFileFiltered))
		emit("harrier_sensor_kernel_shed_reads_total", counter, float64(st.KernelShedReads))
		emit("harrier_sensor_kernel_env_unscanned_total", counter, float64(st.KernelEnvUnscanned))
		emit("harrier_sensor_received_total", counter, float64(st.Received))
		emit("harrier_sensor_decode_errors_total", counter, float64(st.DecodeErrors))
		emit("harrier_sensor_emitted_total", counter, float64(st.Emitted))
	}
	emit("harrier_sensor_queue_depth", gauge, float64(depth))
	emit("harrier_sensor_queue_capacity", gauge, float64(capacity))
	if as := c.analytics.Load(); as != nil {
		emit("harrier_analytics_events_total", counter, float64(as.Events))
		emit("harrier_analytics_matches_total", counter, float64(as.RuleMatches))
		emit("harrier_analytics_alerts_total", counter, float64(as.Alerts))
		emit("harrier_analytics_alert_updates_total", counter, float64(as.Updates))
		emit("harrier_analytics_deduplicated_total", counter, float64(as.Deduplicated))
		emit("harrier_analytics_excepted_total", counter, float64(as.Excepted))
		emit("harrier_analytics_eval_errors_total", counter, float64(as.EvalErrors))
		for id, n := range as.Suppressed {
			emit("harrier_analytics_rate_limited_total", counter, float64(n), id)
		}
	}
	emit("harrier_spool_events_capped_total", counter, float64(c.capped.Load()))
	sp := c.spool.Stats()
	for class, cs := range sp.Classes {
		name := class.String()
		emit("harrier_spool_records", gauge, float64(cs.Depth), name)
		emit("harrier_spool_bytes", gauge, float64(cs.Bytes), name)
		emit("harrier_spool_oldest_age_seconds", gauge, cs.OldestAge.Seconds(), name)
		emit("harrier_spool_appended_total", counter, float64(cs.Appended), name)
		emit("harrier_spool_acked_total", counter, float64(cs.Acked), name)
		emit("harrier_spool_evicted_total", counter, float64(cs.Evicted), name)
		emit("harrier_spool_rejected_total", counter, float64(cs.Rejected), name)
	}
	emit("harrier_spool_disk_bytes", gauge, float64(sp.DiskBytes))
	emit("harrier_spool_quota_bytes", gauge, float64(sp.QuotaBytes))
	us := c.uplink.Stats()
	connected := 0.0
	if us.Connected {
		connected = 1
	}
	emit("harrier_uplink_connected", gauge, connected)
	emit("harrier_uplink_records_acked_total", counter, float64(us.RecordsAcked))
	emit("harrier_uplink_batches_total", counter, float64(us.BatchesSent))
	emit("harrier_uplink_bytes_sent_total", counter, float64(us.BytesSent))
	emit("harrier_uplink_reconnects_total", counter, float64(us.Reconnects))
}

// auditCollector reads the counters of the audit webhook receiver and the
// audit log tailer (either may be nil) and the depth of their queue to
// analytics, at scrape time.
type auditCollector struct {
	receiver *audit.Receiver
	tailer   *audit.Tailer
	queue    func() (depth, capacity int)
	events   *prometheus.Desc
	rejected *prometheus.Desc
	dropped  *prometheus.Desc
	depth    *prometheus.Desc
	capacity *prometheus.Desc
}

func newAuditCollector(r *audit.Receiver, t *audit.Tailer, queue func() (int, int)) *auditCollector {
	src := []string{"source"}
	return &auditCollector{
		receiver: r, tailer: t, queue: queue,
		events:   prometheus.NewDesc("harrier_audit_events_total", "Kubernetes audit events accepted and queued for analytics, by source (webhook, log).", src, nil),
		rejected: prometheus.NewDesc("harrier_audit_rejected_total", "Audit webhook requests (unauthenticated, malformed, too large) or log lines refused, by source.", src, nil),
		dropped:  prometheus.NewDesc("harrier_audit_dropped_total", "Accepted audit events lost before analytics (the agent was stopping), by source.", src, nil),
		depth:    prometheus.NewDesc("harrier_audit_queue_depth", "Audit events waiting for analytics; a full queue makes the webhook wait (back-pressure), not drop.", nil, nil),
		capacity: prometheus.NewDesc("harrier_audit_queue_capacity", "Capacity of the audit → analytics queue.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *auditCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.events, c.rejected, c.dropped, c.depth, c.capacity} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *auditCollector) Collect(ch chan<- prometheus.Metric) {
	emit := func(source string, st audit.Stats) {
		ch <- prometheus.MustNewConstMetric(c.events, prometheus.CounterValue, float64(st.Events), source)
		ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(st.Rejected), source)
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(st.Dropped), source)
	}
	if c.receiver != nil {
		emit("webhook", c.receiver.Stats())
	}
	if c.tailer != nil {
		emit("log", c.tailer.Stats())
	}
	depth, capacity := c.queue()
	ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(depth))
	ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(capacity))
}

// newAlertLatency is the histogram of the time from the behaviour (the
// event that raised a new alert) to the alert being durable in the spool:
// detection latency on the node, before the uplink.
func newAlertLatency() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "harrier_alert_spool_latency_seconds",
		Help:    "Time from the event that raised a new alert to the alert being durable in the spool.",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	})
}

// serveMetrics serves metricsHandler on addr until ctx is done. A port
// that cannot be bound is logged, not fatal: detection matters more than
// its metrics.
func serveMetrics(ctx context.Context, addr string, log *slog.Logger, ready func() bool, cs ...prometheus.Collector) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error("agent metrics not served; the agent keeps running", "addr", addr, "error", err)
		return nil
	}
	srv := &http.Server{Handler: metricsHandler(ready, cs...), ReadHeaderTimeout: 5 * time.Second}
	shutDown := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(shutDown)
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	log.Info("agent metrics", "url", fmt.Sprintf("http://%s/metrics", ln.Addr()))
	err = srv.Serve(ln)
	if !stop() {
		<-shutDown // Serve returns as Shutdown begins: wait for it to end
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// metricsHandler serves /metrics (cs and the Go runtime's and process's
// collectors), /livez, and /readyz: 200 once ready says so, 503 before.
func metricsHandler(ready func() bool, cs ...prometheus.Collector) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(cs...)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "starting: the sensor is not attached yet", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}

// admissionCollector exports the admission guard's counters and its queue
// of violations to analytics.
type admissionCollector struct {
	handler  *admission.Handler
	sink     *admissionSink
	reviews  *prometheus.Desc
	dropped  *prometheus.Desc
	depth    *prometheus.Desc
	capacity *prometheus.Desc
}

func newAdmissionCollector(h *admission.Handler, sink *admissionSink) *admissionCollector {
	return &admissionCollector{
		handler: h, sink: sink,
		reviews:  prometheus.NewDesc("harrier_admission_reviews_total", "Admission reviews by outcome (allowed, denied, warned, exempt, unchecked, bad_review, bad_object, timeout, panic; allowed includes warned, exempt and unchecked).", []string{"outcome"}, nil),
		dropped:  prometheus.NewDesc("harrier_admission_violations_dropped_total", "Failed controls not handed to analytics (no admission-violation alert) because the queue was full: the guard never waits on the API server's request path.", nil, nil),
		depth:    prometheus.NewDesc("harrier_admission_queue_depth", "Failed controls waiting for analytics.", nil, nil),
		capacity: prometheus.NewDesc("harrier_admission_queue_capacity", "Capacity of the admission guard → analytics queue.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *admissionCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.reviews, c.dropped, c.depth, c.capacity} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *admissionCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.handler.Stats()
	for _, o := range []struct {
		outcome string
		n       uint64
	}{{"allowed", st.Allowed}, {"denied", st.Denied}, {"warned", st.Warned}, {"exempt", st.Exempt}, {"unchecked", st.Unchecked},
		{"bad_review", st.BadReviews}, {"bad_object", st.BadObjects}, {"timeout", st.Timeouts}, {"panic", st.Panics}} {
		ch <- prometheus.MustNewConstMetric(c.reviews, prometheus.CounterValue, float64(o.n), o.outcome)
	}
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(c.sink.dropped.Load()))
	ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(len(c.sink.events)))
	ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(cap(c.sink.events)))
}

// exeContentCollector exports the executable content reader's counters.
type exeContentCollector struct{ r *execontent.Reader }

var exeContentFilesDesc = prometheus.NewDesc("harrier_exe_content_files_total",
	"Executed files offered to the content reader, by result: read, hashed, matched (a known tool's signatures), "+
		"dropped (queue full), gone (the process and its file out of reach), changed (not the file executed).",
	[]string{"result"}, nil)

func (exeContentCollector) Describe(ch chan<- *prometheus.Desc) { ch <- exeContentFilesDesc }

func (c exeContentCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.r.Stats()
	for result, v := range map[string]uint64{"read": st.Read, "hashed": st.Hashed, "matched": st.Matched,
		"dropped": st.Dropped, "gone": st.Gone, "changed": st.Changed} {
		ch <- prometheus.MustNewConstMetric(exeContentFilesDesc, prometheus.CounterValue, float64(v), result)
	}
}
