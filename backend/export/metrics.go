package export

import "github.com/prometheus/client_golang/prometheus"

// Metric names.
const (
	metricSent       = "harrier_export_records_sent_total"
	metricSkipped    = "harrier_export_records_skipped_total"
	metricFailed     = "harrier_export_send_failures_total"
	metricResent     = "harrier_export_records_resent_total"
	metricDead       = "harrier_export_records_dead_lettered_total"
	metricLost       = "harrier_export_records_lost_total"
	metricLagRecords = "harrier_export_lag_records"
	metricLagSeconds = "harrier_export_lag_seconds"
)

type metrics struct {
	sent, skipped, failed, resent, dead, lost *prometheus.CounterVec
	lagRecords, lagSeconds                    *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) metrics {
	l := []string{"destination"}
	c := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, l)
	}
	g := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, l)
	}
	m := metrics{
		sent:       c(metricSent, "Records the destination took, by destination."),
		skipped:    c(metricSkipped, "Records the destination's filter left out."),
		failed:     c(metricFailed, "Failed attempts to send (each followed by a retry with backoff)."),
		resent:     c(metricResent, "Records sent again after a failure (written but not confirmed before it)."),
		dead:       c(metricDead, "Records the destination refused as malformed, kept in its dead-letter list."),
		lost:       c(metricLost, "Records the store dropped (its bounded event ring) before this destination sent them."),
		lagRecords: g(metricLagRecords, "Alert records stored but not yet confirmed delivered."),
		lagSeconds: g(metricLagSeconds, "Age of the oldest record not yet sent (0 when caught up)."),
	}
	if reg != nil {
		reg.MustRegister(m.sent, m.skipped, m.failed, m.resent, m.dead, m.lost, m.lagRecords, m.lagSeconds)
	}
	return m
}

type destMetrics struct {
	sent, skipped, failed, resent, dead, lost prometheus.Counter
	lagRecords, lagSeconds                    prometheus.Gauge
}

func (m metrics) forDestination(name string) destMetrics {
	return destMetrics{
		sent: m.sent.WithLabelValues(name), skipped: m.skipped.WithLabelValues(name),
		failed: m.failed.WithLabelValues(name), resent: m.resent.WithLabelValues(name),
		dead: m.dead.WithLabelValues(name), lost: m.lost.WithLabelValues(name), lagRecords: m.lagRecords.WithLabelValues(name),
		lagSeconds: m.lagSeconds.WithLabelValues(name),
	}
}
