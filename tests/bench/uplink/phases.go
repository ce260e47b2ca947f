package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/harrier-sec/harrier/internal/benchevents"
	"github.com/harrier-sec/harrier/store"
)

// phaseOpts is what one phase process is told.
type phaseOpts struct {
	dir          string // this phase's own directory
	pkiDir       string
	n            int
	rate         int
	duration     time.Duration
	backlog      int
	quota        int64 // 0: the store's default (1 GiB)
	memLimit     int64 // 0: none
	drainTimeout time.Duration
	seed         uint64
	verbose      bool
	// heapProfile writes a heap profile named after point; nil: none.
	heapProfile func(point string)
	// backendCPUProfile is where the backend child writes its CPU
	// profile; "": none.
	backendCPUProfile string
}

func (o phaseOpts) profileHeap(point string) {
	if o.heapProfile != nil {
		o.heapProfile(point)
	}
}

// throughputResult: spool append and drain, no network.
type throughputResult struct {
	Records          uint64    `json:"records"`
	PayloadMean      float64   `json:"payload_bytes_mean"`
	PayloadMin       int       `json:"payload_bytes_min"`
	PayloadMax       int       `json:"payload_bytes_max"`
	AppendSeconds    float64   `json:"append_seconds"`
	AppendPerSec     float64   `json:"append_records_per_sec"`
	AppendMiBPerSec  float64   `json:"append_mib_per_sec"`
	AppendBatch      int       `json:"append_batch"`
	DiskAfterAppend  int64     `json:"disk_bytes_after_append"`
	DrainSeconds     float64   `json:"drain_seconds"`
	DrainPerSec      float64   `json:"drain_records_per_sec"`
	GenerateSeconds  float64   `json:"generate_seconds"`
	Peaks            memPeaks  `json:"mem_peaks"`
	End              memSample `json:"mem_end"`
	DrainedRemaining uint64    `json:"depth_after_drain"`
}

// runThroughput appends n pre-generated events in batches of 512 (one fsync
// each) and then drains them with Next(512, 1 MiB) + Ack, the uplink's sizes.
func runThroughput(ctx context.Context, o phaseOpts, log *slog.Logger) (*throughputResult, error) {
	sp, err := openSpool(o.dir, o.quota, log)
	if err != nil {
		return nil, err
	}
	defer sp.Close()
	gen := benchevents.New(o.seed, "node-bench-1")
	res := &throughputResult{AppendBatch: spoolBatchLimit, PayloadMin: 1 << 30}

	smp := newSampler(sp, nil)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go smp.run(sctx)

	// Each batch is generated untimed, so the timing is the spool's alone
	// and no more than one batch is held in memory.
	var total uint64
	var appendTime, genTime time.Duration
	batch := make([][]byte, 0, spoolBatchLimit)
	for done := 0; done < o.n; done += len(batch) {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("append: %w", err)
		}
		t0 := time.Now()
		batch = batch[:0]
		for range min(spoolBatchLimit, o.n-done) {
			b, err := gen.Payload()
			if err != nil {
				return nil, err
			}
			batch = append(batch, b)
			l := len(b)
			total += uint64(l)
			res.PayloadMin, res.PayloadMax = min(res.PayloadMin, l), max(res.PayloadMax, l)
		}
		t1 := time.Now()
		genTime += t1.Sub(t0)
		if _, err := sp.AppendBatch(store.ClassEvent, batch); err != nil {
			return nil, fmt.Errorf("append: %w", err)
		}
		appendTime += time.Since(t1)
	}
	res.GenerateSeconds = genTime.Seconds()
	res.PayloadMean = float64(total) / float64(o.n)
	res.Records = uint64(o.n)
	res.AppendSeconds = appendTime.Seconds()
	res.AppendPerSec = float64(o.n) / appendTime.Seconds()
	res.AppendMiBPerSec = float64(total) / mib / appendTime.Seconds()
	if res.DiskAfterAppend, err = diskUsage(filepath.Join(o.dir, "spool")); err != nil {
		return nil, err
	}

	t0 := time.Now()
	var drained uint64
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("drain: %w", err)
		}
		recs, err := sp.Next(spoolBatchLimit, 1<<20)
		if err != nil {
			return nil, fmt.Errorf("drain: %w", err)
		}
		if len(recs) == 0 {
			break
		}
		ids := make([]store.RecordID, len(recs))
		for i, r := range recs {
			ids[i] = r.RecordID
		}
		if err := sp.Ack(ids...); err != nil {
			return nil, fmt.Errorf("drain: %w", err)
		}
		drained += uint64(len(recs))
	}
	d := time.Since(t0)
	res.DrainSeconds = d.Seconds()
	res.DrainPerSec = float64(drained) / d.Seconds()
	res.DrainedRemaining = eventDepth(sp)
	stop()
	res.Peaks = smp.peaks()
	if res.End, err = readMem(); err != nil {
		return nil, err
	}
	return res, nil
}

// sustainedResult: fixed-rate producer while the uplink drains to a real
// backend in a child process.
type sustainedResult struct {
	TargetRate        int     `json:"target_rate"`
	WindowSeconds     float64 `json:"window_seconds"`
	Appended          uint64  `json:"appended"`
	AppendFailed      uint64  `json:"append_failed"`
	AppendPerSec      float64 `json:"append_records_per_sec"`
	DeliveredInWindow uint64  `json:"delivered_in_window"`
	DeliveredPerSec   float64 `json:"delivered_records_per_sec"`
	DepthAtWindowEnd  uint64  `json:"depth_at_window_end"`
	MaxDepth          uint64  `json:"max_depth"`
	DepthSlope        float64 `json:"depth_slope_second_half_records_per_sec"`
	Bounded           bool    `json:"backlog_bounded"`
	TailDrainSeconds  float64 `json:"tail_drain_seconds"`
	// Where the window's time went: in AppendBatch (the writer), and in the
	// uplink's spool reads (Pending) and releases (Acked, AckedCalls batches).
	AppendSeconds     float64       `json:"append_seconds"`
	PendingSeconds    float64       `json:"pending_seconds"`
	AckedSeconds      float64       `json:"acked_seconds"`
	AckedCalls        int64         `json:"acked_calls"`
	TotalAcked        uint64        `json:"total_acked"`
	WireBytes         uint64        `json:"wire_bytes"`
	WireBytesPerEvent float64       `json:"wire_bytes_per_event"`
	RawBytesPerEvent  float64       `json:"raw_protobuf_bytes_per_event"`
	SpoolBytesPerEvt  float64       `json:"spool_payload_bytes_per_event"`
	CompressionRatio  float64       `json:"compression_ratio"`
	Reconnects        uint64        `json:"reconnects"`
	Peaks             memPeaks      `json:"mem_peaks"`
	End               memSample     `json:"mem_end"`
	Samples           []sample      `json:"samples"`
	Backend           backendResult `json:"backend"`
}

func runSustained(ctx context.Context, o phaseOpts, log *slog.Logger) (*sustainedResult, error) {
	addr, err := freeUDPAddr()
	if err != nil {
		return nil, err
	}
	be, err := startBackend(ctx, o.pkiDir, filepath.Join(o.dir, "backend"), addr, o.verbose, o.backendCPUProfile)
	if err != nil {
		return nil, err
	}
	backendStopped := false
	defer func() {
		if !backendStopped {
			_, _ = be.stop()
		}
	}()
	sp, err := openSpool(o.dir, o.quota, log)
	if err != nil {
		return nil, err
	}
	defer sp.Close()
	src := newCountingSource(sp)
	client, err := newClient(o.pkiDir, be.Addr, sp.ID(), src, log)
	if err != nil {
		return nil, err
	}
	bg := &errGroup{}
	cctx, cancel := context.WithCancel(ctx)
	bg.Go("uplink", func() error { return client.Run(cctx) })
	bg.Go("spool maintenance", func() error { return sp.Maintain(cctx, time.Minute) })
	stopped := false
	stopBG := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return bg.Wait()
	}
	defer func() { _ = stopBG() }()
	if err := waitUntil(ctx, 30*time.Second, "uplink connect", func() bool { return client.Stats().Connected }); err != nil {
		return nil, err
	}

	if err := resetHWM(); err != nil {
		log.Warn("peak RSS covers setup too", "error", err)
	}
	smp := newSampler(sp, client)
	sctx, stopSmp := context.WithCancel(ctx)
	defer stopSmp()
	go smp.run(sctx)

	app := &appender{spool: sp, gen: benchevents.New(o.seed, "node-bench-1"), notify: client.Notify, log: log}
	acked0 := client.Stats().RecordsAcked
	t0 := time.Now()
	if err := app.produceAtRate(ctx, o.rate, o.duration); err != nil {
		return nil, err
	}
	window := time.Since(t0)
	o.profileHeap("window")
	res := &sustainedResult{TargetRate: o.rate, WindowSeconds: window.Seconds(), Appended: app.count, AppendFailed: app.failed}
	res.AppendPerSec = float64(app.count) / window.Seconds()
	res.DeliveredInWindow = client.Stats().RecordsAcked - acked0
	res.DeliveredPerSec = float64(res.DeliveredInWindow) / window.Seconds()
	res.DepthAtWindowEnd = eventDepth(sp)
	res.PendingSeconds = time.Duration(src.pendingNanos.Load()).Seconds()
	res.AckedSeconds = time.Duration(src.ackedNanos.Load()).Seconds()
	res.AckedCalls = src.ackedCalls.Load()
	res.AppendSeconds = app.busy.Seconds()
	t0 = time.Now()
	if err := waitUntil(ctx, o.drainTimeout, "drain after the window", func() bool { return eventDepth(sp) == 0 }); err != nil {
		return nil, err
	}
	res.TailDrainSeconds = time.Since(t0).Seconds()
	stopSmp()
	res.Peaks = smp.peaks()
	if res.End, err = readMem(); err != nil {
		return nil, err
	}
	res.Samples, _ = smp.result()
	res.MaxDepth, res.DepthSlope = depthTrend(res.Samples, window.Seconds())
	// Bounded: the backlog does not grow over the second half and never
	// holds more than two seconds of input.
	res.Bounded = res.DepthSlope < 0.01*float64(o.rate) && res.MaxDepth <= uint64(2*o.rate)

	cs := client.Stats()
	res.TotalAcked, res.WireBytes, res.Reconnects = cs.RecordsAcked, cs.BytesSent, cs.Reconnects
	if cs.RecordsAcked > 0 {
		res.WireBytesPerEvent = float64(cs.BytesSent) / float64(cs.RecordsAcked)
	}
	if n := src.rawRecs.Load(); n > 0 {
		res.RawBytesPerEvent = float64(src.rawBytes.Load()) / float64(n)
	}
	if app.count > 0 {
		res.SpoolBytesPerEvt = float64(app.payload) / float64(app.count)
	}
	if res.WireBytesPerEvent > 0 {
		res.CompressionRatio = res.RawBytesPerEvent / res.WireBytesPerEvent
	}
	if err := stopBG(); err != nil {
		return nil, err
	}
	backendStopped = true
	if res.Backend, err = be.stop(); err != nil {
		return nil, err
	}
	return res, nil
}

// depthTrend returns the highest depth sampled within the window and the
// least-squares slope of depth over the window's second half.
func depthTrend(s []sample, window float64) (maxDepth uint64, slope float64) {
	var n, sx, sy, sxx, sxy float64
	for _, p := range s {
		if p.T > window {
			continue
		}
		maxDepth = max(maxDepth, p.Depth)
		if p.T < window/2 {
			continue
		}
		x, y := p.T, float64(p.Depth)
		n++
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
	}
	if d := n*sxx - sx*sx; n >= 2 && d != 0 {
		slope = (n*sxy - sx*sy) / d
	}
	return maxDepth, slope
}

// outageResult: a backlog built with no backend, then drained.
type outageResult struct {
	QuotaBytes        int64     `json:"quota_bytes"`
	MemLimitBytes     int64     `json:"mem_limit_bytes"`
	BacklogTarget     int       `json:"backlog_target"`
	Appended          uint64    `json:"appended"`
	AppendFailed      uint64    `json:"append_failed"`
	AppendSeconds     float64   `json:"append_seconds"`
	Evicted           uint64    `json:"evicted"`
	Rejected          uint64    `json:"rejected"`
	GapRuns           int       `json:"gap_runs"`
	GapRecords        uint64    `json:"gap_records"`
	DepthAfterBacklog uint64    `json:"depth_after_backlog"`
	LiveBytes         uint64    `json:"live_bytes_after_backlog"`
	DiskAfterBacklog  int64     `json:"disk_bytes_after_backlog"`
	PeakSpoolDisk     int64     `json:"peak_spool_disk_bytes_as_measured_by_spool"`
	MemAfterBacklog   memSample `json:"mem_after_backlog"`
	// RSS after the backlog by mapping: sst, vlog, mem (Badger's files), other files, anon.
	RSSByMappingAfterBacklog map[string]uint64 `json:"rss_by_mapping_after_backlog"`
	BacklogPeaks             memPeaks          `json:"mem_peaks_backlog"`
	ReconnectSeconds         float64           `json:"backend_up_to_first_ack_seconds"`
	DrainSeconds             float64           `json:"drain_seconds"`
	DrainPerSec              float64           `json:"drain_records_per_sec"`
	Extrapolated1h           float64           `json:"extrapolated_1h_outage_drain_seconds"`
	Delivered                uint64            `json:"delivered"`
	Lost                     int64             `json:"unaccounted"`
	DrainPeaks               memPeaks          `json:"mem_peaks_drain"`
	End                      memSample         `json:"mem_end"`
	Samples                  []sample          `json:"samples"`
	Backend                  backendResult     `json:"backend"`
}

// oneHourAt1k is the backlog of a one-hour outage at 1 000 events/s.
const oneHourAt1k = 3_600_000

func runOutage(ctx context.Context, o phaseOpts, log *slog.Logger) (*outageResult, error) {
	addr, err := freeUDPAddr()
	if err != nil {
		return nil, err
	}
	sp, err := openSpool(o.dir, o.quota, log)
	if err != nil {
		return nil, err
	}
	defer sp.Close()
	src := newCountingSource(sp)
	// The uplink runs from the start and keeps failing to reach the backend,
	// as an agent does during an outage.
	client, err := newClient(o.pkiDir, addr, sp.ID(), src, log)
	if err != nil {
		return nil, err
	}
	bg := &errGroup{}
	cctx, cancel := context.WithCancel(ctx)
	bg.Go("uplink", func() error { return client.Run(cctx) })
	bg.Go("spool maintenance", func() error { return sp.Maintain(cctx, time.Minute) })
	defer func() { cancel(); _ = bg.Wait() }()

	if err := resetHWM(); err != nil {
		log.Warn("peak RSS covers setup too", "error", err)
	}
	smp := newSampler(sp, client)
	sctx, stopSmp := context.WithCancel(ctx)
	defer stopSmp()
	go smp.run(sctx)

	res := &outageResult{QuotaBytes: sp.Stats().QuotaBytes, MemLimitBytes: o.memLimit, BacklogTarget: o.backlog}
	app := &appender{spool: sp, gen: benchevents.New(o.seed, "node-bench-1"), notify: client.Notify, log: log}
	t0 := time.Now()
	for done := 0; done < o.backlog; done += spoolBatchLimit {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("backlog: %w", err)
		}
		if err := app.add(min(spoolBatchLimit, o.backlog-done)); err != nil {
			return nil, err
		}
		app.flush()
	}
	res.AppendSeconds = time.Since(t0).Seconds()
	res.Appended, res.AppendFailed = app.count, app.failed
	st := sp.Stats()
	ev := st.Classes[store.ClassEvent]
	res.Evicted, res.Rejected, res.DepthAfterBacklog, res.LiveBytes = ev.Evicted, ev.Rejected, ev.Depth, st.LiveBytes
	gaps, err := sp.Gaps()
	if err != nil {
		return nil, fmt.Errorf("gaps: %w", err)
	}
	res.GapRuns = len(gaps)
	for _, g := range gaps {
		res.GapRecords += g.Count
	}
	if res.DiskAfterBacklog, err = diskUsage(filepath.Join(o.dir, "spool")); err != nil {
		return nil, err
	}
	smp.take()
	if res.MemAfterBacklog, err = readMem(); err != nil {
		return nil, err
	}
	if res.RSSByMappingAfterBacklog, err = rssByMapping(); err != nil {
		return nil, err
	}
	res.BacklogPeaks = smp.peaks()
	o.profileHeap("backlog")
	smp.resetPeaks()
	if err := resetHWM(); err != nil {
		log.Warn("drain peak RSS includes the backlog phase", "error", err)
	}

	be, err := startBackend(ctx, o.pkiDir, filepath.Join(o.dir, "backend"), addr, o.verbose, o.backendCPUProfile)
	if err != nil {
		return nil, err
	}
	backendStopped := false
	defer func() {
		if !backendStopped {
			_, _ = be.stop()
		}
	}()
	client.Notify()
	if err := waitUntil(ctx, o.drainTimeout, "first ack after the backend came up", func() bool { return client.Stats().RecordsAcked > 0 }); err != nil {
		return nil, err
	}
	first := time.Now()
	res.ReconnectSeconds = first.Sub(be.Ready).Seconds()
	if err := waitUntil(ctx, o.drainTimeout, "drain the backlog", func() bool { return eventDepth(sp) == 0 }); err != nil {
		return nil, err
	}
	d := time.Since(first)
	res.DrainSeconds = d.Seconds()
	res.Delivered = client.Stats().RecordsAcked
	res.DrainPerSec = float64(res.Delivered) / d.Seconds()
	if res.DrainPerSec > 0 {
		res.Extrapolated1h = oneHourAt1k / res.DrainPerSec
	}
	// The gap report rides on the first heartbeat after the reconnect, long
	// acknowledged by now; check that it was handed over.
	if res.GapRuns > 0 {
		if err := waitUntil(ctx, 15*time.Second, "gap report", func() bool {
			g, err := sp.Gaps()
			return err == nil && len(g) == 0
		}); err != nil {
			log.Warn("gaps not reported", "error", err)
		}
	}
	stopSmp()
	res.DrainPeaks = smp.peaks()
	o.profileHeap("end")
	if res.End, err = readMem(); err != nil {
		return nil, err
	}
	res.Samples, _ = smp.result()
	cancel()
	if err := bg.Wait(); err != nil {
		return nil, err
	}
	// The client counts an ack after the spool has released the records, so
	// the count read when the spool emptied may miss the last batch; the
	// balance uses the final count.
	res.Delivered = client.Stats().RecordsAcked
	res.Lost = int64(res.Appended) - int64(res.Delivered) - int64(res.Evicted)
	backendStopped = true
	if res.Backend, err = be.stop(); err != nil {
		return nil, err
	}
	return res, nil
}
