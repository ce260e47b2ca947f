package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// rssTarget is the project's target for the agent's RSS with the spool at
// quota.
const rssTarget = 150 * mib

type table struct {
	w io.Writer
}

func (t table) section(title string) {
	fmt.Fprintf(t.w, "| **%s** | |\n", title)
}

func (t table) row(name, format string, a ...any) {
	fmt.Fprintf(t.w, "| %s | %s |\n", name, fmt.Sprintf(format, a...))
}

func mibStr(b uint64) string { return fmt.Sprintf("%.1f MiB", mibOf(b)) }
func mibStrI(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/mib) }
func rate(v float64) string  { return fmt.Sprintf("%s/s", thousands(uint64(v+0.5))) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

func thousands(v uint64) string {
	s := fmt.Sprint(v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func underTarget(b uint64) string {
	if b <= rssTarget {
		return "under 150 MiB"
	}
	return "**over 150 MiB**"
}

func writeTable(w io.Writer, r *results) {
	t := table{w: w}
	fmt.Fprintf(w, "## Uplink benchmark (%s CPUs, %s, kernel %s; wall %.0f s)\n\n", r.Host["cpus"], r.Host["go"], r.Host["kernel"], r.WallSeconds)
	fmt.Fprintln(w, "| figure | value |")
	fmt.Fprintln(w, "|---|---|")
	if x := r.Throughput; x != nil {
		t.section("1. spool throughput (segment files and Badger metadata on disk, no network)")
		t.row("event payload (marshaled api.Record)", "mean %.0f B, min %d, max %d", x.PayloadMean, x.PayloadMin, x.PayloadMax)
		t.row("append, batches of 512, one fsync each", "%s (%.1f MiB/s; %s records in %.2f s)", rate(x.AppendPerSec), x.AppendMiBPerSec, thousands(x.Records), x.AppendSeconds)
		t.row("drain, Next(512, 1 MiB) + Ack", "%s (%.2f s)", rate(x.DrainPerSec), x.DrainSeconds)
		t.row("spool disk after append", "%s", mibStrI(x.DiskAfterAppend))
		t.row("agent RSS peak (VmHWM) / end", "%s / %s", mibStr(x.Peaks.VmHWM), mibStr(x.End.VmRSS))
	}
	if x := r.Sustained; x != nil {
		t.section(fmt.Sprintf("2. sustained %s/s for %.0f s, spool → QUIC mTLS → backend BadgerStore (child process)", thousands(uint64(x.TargetRate)), x.WindowSeconds))
		t.row("achieved append rate", "%s (%s appended, %d failed)", rate(x.AppendPerSec), thousands(x.Appended), x.AppendFailed)
		t.row("delivered (acked by backend) during the window", "%s", rate(x.DeliveredPerSec))
		t.row("time in the window: writer in AppendBatch / uplink in Pending / in Acked", "%.1f s / %.1f s / %.1f s (%d acks)", x.AppendSeconds, x.PendingSeconds, x.AckedSeconds, x.AckedCalls)
		t.row("spool depth max / at window end / slope (2nd half)", "%s / %s / %+.0f records/s", thousands(x.MaxDepth), thousands(x.DepthAtWindowEnd), x.DepthSlope)
		t.row("backlog bounded", "%s (tail drained in %.1f s)", yesNo(x.Bounded), x.TailDrainSeconds)
		t.row("depth every 1 s", "%s", depthSeries(x.Samples))
		t.row("agent RSS peak (VmHWM) / sampled peak / end", "%s / %s / %s", mibStr(x.Peaks.VmHWM), mibStr(x.Peaks.SampledRSS), mibStr(x.End.VmRSS))
		t.row("agent anon RSS sampled peak; Go heap in use peak / end", "%s; %s / %s", mibStr(x.Peaks.SampledRssAnon), mibStr(x.Peaks.SampledHeapInuse), mibStr(x.End.HeapInuse))
		t.row("backend (child) VmHWM; store on disk", "%s; %s", mibStr(x.Backend.VmHWM), mibStrI(x.Backend.StoreDisk))
		backendMem(t, x.Backend)
		t.row("backend records stored / client acked", "%s / %s (store errors %d, reconnects %d)", thousands(x.Backend.AgentRecords), thousands(x.TotalAcked), x.Backend.StoreErrors, x.Reconnects)
		t.section("3. bytes per event")
		t.row("on the wire (zstd frames: BytesSent / records acked)", "%.1f B", x.WireBytesPerEvent)
		t.row("raw protobuf (uncompressed Batch / records)", "%.1f B (spool payload %.1f B)", x.RawBytesPerEvent, x.SpoolBytesPerEvt)
		t.row("compression ratio", "%.2f×", x.CompressionRatio)
	}
	for _, o := range []struct {
		title string
		x     *outageResult
	}{
		{"4a. outage backlog, default quota", r.Outage},
		{"4b. outage backlog at quota", r.Quota},
		{"4c. outage backlog at quota, debug.SetMemoryLimit", r.QuotaMemLimit},
	} {
		x := o.x
		if x == nil {
			continue
		}
		title := fmt.Sprintf("%s (%s MiB quota", o.title, strconv.FormatInt(x.QuotaBytes>>20, 10))
		if x.MemLimitBytes > 0 {
			title += fmt.Sprintf(", SetMemoryLimit %d MiB", x.MemLimitBytes>>20)
		}
		t.section(title + ")")
		t.row("backlog appended with no backend", "%s of %s in %.1f s (%s; %d failed)", thousands(x.Appended), thousands(uint64(x.BacklogTarget)), x.AppendSeconds, rate(float64(x.Appended)/x.AppendSeconds), x.AppendFailed)
		t.row("spool after backlog: depth / live / disk", "%s / %s / %s", thousands(x.DepthAfterBacklog), mibStr(x.LiveBytes), mibStrI(x.DiskAfterBacklog))
		t.row("evicted; gaps (runs / records)", "%s; %d / %s", thousands(x.Evicted), x.GapRuns, thousands(x.GapRecords))
		t.row("agent RSS during backlog: peak (VmHWM) / end", "%s / %s — %s", mibStr(x.BacklogPeaks.VmHWM), mibStr(x.MemAfterBacklog.VmRSS), underTarget(x.BacklogPeaks.VmHWM))
		if m := x.RSSByMappingAfterBacklog; m != nil {
			t.row("  RSS at the end of the backlog by mapping", "anon %s, Badger .sst %s, .vlog %s, .mem %s, other files %s",
				mibStr(m["anon"]), mibStr(m["sst"]), mibStr(m["vlog"]), mibStr(m["mem"]), mibStr(m["other files"]))
		}
		t.row("  of which anon (sampled peak) / Go heap in use (sampled peak)", "%s / %s", mibStr(x.BacklogPeaks.SampledRssAnon), mibStr(x.BacklogPeaks.SampledHeapInuse))
		t.row("backend up → first ack", "%.2f s", x.ReconnectSeconds)
		backendMem(t, x.Backend)
		t.row("drain backlog (first ack → spool empty)", "%s records in %.1f s = %s", thousands(x.Delivered), x.DrainSeconds, rate(x.DrainPerSec))
		if x.Evicted == 0 {
			t.row("1 h outage at 1k/s (3.6M events), **extrapolated**", "%.0f s (%.1f min) = 3.6M / measured drain rate", x.Extrapolated1h, x.Extrapolated1h/60)
		} else {
			t.row("1 h outage at 1k/s", "n/a here: the quota caps the backlog, the rest is evicted")
		}
		t.row("agent RSS during drain: peak (VmHWM) / end", "%s / %s — %s", mibStr(x.DrainPeaks.VmHWM), mibStr(x.End.VmRSS), underTarget(x.DrainPeaks.VmHWM))
		t.row("  of which anon (sampled peak) / Go heap in use (sampled peak)", "%s / %s", mibStr(x.DrainPeaks.SampledRssAnon), mibStr(x.DrainPeaks.SampledHeapInuse))
		gaps := "none"
		if n, ok := x.Backend.AgentGaps["RECORD_CLASS_EVENT"]; ok {
			gaps = thousands(n) + " event records"
		}
		t.row("backend: stored / gaps reported", "%s / %s", thousands(x.Backend.AgentRecords), gaps)
		t.row("appended − delivered − evicted", "%d", x.Lost)
	}
}

// depthSeries prints the sampled depths compactly (thousands).
func depthSeries(s []sample) string {
	parts := make([]string, 0, len(s))
	for _, p := range s {
		parts = append(parts, fmt.Sprintf("%.1fk", float64(p.Depth)/1000))
	}
	return strings.Join(parts, " ")
}

// backendMem reports the backend child's anonymous RSS peak and its RSS at
// the end split by mapping (Badger's file pages are page cache the kernel
// can reclaim; anon is the backend's own).
func backendMem(t table, b backendResult) {
	t.row("  backend anon RSS sampled peak", "%s", mibStr(b.RssAnonPeak))
	if m := b.RSSByMapping; m != nil {
		t.row("  backend RSS at the end by mapping", "anon %s, Badger .sst %s, .vlog %s, .mem %s, other files %s",
			mibStr(m["anon"]), mibStr(m["sst"]), mibStr(m["vlog"]), mibStr(m["mem"]), mibStr(m["other files"]))
	}
}
