package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/agent"
	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/benchevents"
	"github.com/harrier-sec/harrier/store"
	"github.com/harrier-sec/harrier/transport"
)

// Agent constants, as in agent/agent.go.
const (
	spoolFlush      = 100 * time.Millisecond
	spoolBatchLimit = 512
)

// countingSource is the agent's spool adapter, counting the raw protobuf
// bytes it hands to the uplink so the benchmark can report the compression.
type countingSource struct {
	*agent.SpoolSource
	rawRecs, rawBytes atomic.Uint64
	// Time the uplink spends reading the spool and releasing acked records.
	pendingNanos, ackedNanos, ackedCalls atomic.Int64
}

func newCountingSource(sp *store.Spool) *countingSource {
	return &countingSource{SpoolSource: agent.NewSpoolSource(sp)}
}

func (c *countingSource) Pending(ctx context.Context, maxRecords, maxBytes int) ([]*api.Record, error) {
	t0 := time.Now()
	recs, err := c.SpoolSource.Pending(ctx, maxRecords, maxBytes)
	c.pendingNanos.Add(int64(time.Since(t0)))
	for _, r := range recs {
		c.rawBytes.Add(uint64(proto.Size(r)))
		c.rawRecs.Add(1)
	}
	return recs, err
}

func (c *countingSource) Acked(seqs []uint64) error {
	t0 := time.Now()
	err := c.SpoolSource.Acked(seqs)
	c.ackedNanos.Add(int64(time.Since(t0)))
	c.ackedCalls.Add(1)
	return err
}

// sample is one 1 s observation of the agent side.
type sample struct {
	T         float64 `json:"t"`
	Depth     uint64  `json:"depth"`
	Appended  uint64  `json:"appended"`
	Acked     uint64  `json:"acked"`
	VmRSS     uint64  `json:"vm_rss"`
	RssAnon   uint64  `json:"rss_anon"`
	HeapInuse uint64  `json:"heap_inuse"`
}

// sampler records depth and memory every second and keeps the peaks.
type sampler struct {
	spool  *store.Spool
	client *transport.Client // may be nil
	start  time.Time

	mu          sync.Mutex
	samples     []sample
	peakRSS     uint64
	peakAnon    uint64
	peakHeap    uint64
	peakDepth   uint64
	peakDiskUse int64
}

func newSampler(spool *store.Spool, client *transport.Client) *sampler {
	return &sampler{spool: spool, client: client, start: time.Now()}
}

func (s *sampler) take() {
	st := s.spool.Stats()
	ev := st.Classes[store.ClassEvent]
	m, err := readMem()
	if err != nil {
		return
	}
	smp := sample{T: time.Since(s.start).Seconds(), Depth: ev.Depth, Appended: ev.Appended, VmRSS: m.VmRSS, RssAnon: m.RssAnon, HeapInuse: m.HeapInuse}
	if s.client != nil {
		smp.Acked = s.client.Stats().RecordsAcked
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples = append(s.samples, smp)
	s.peakRSS = max(s.peakRSS, m.VmRSS)
	s.peakAnon = max(s.peakAnon, m.RssAnon)
	s.peakHeap = max(s.peakHeap, m.HeapInuse)
	s.peakDepth = max(s.peakDepth, ev.Depth)
	s.peakDiskUse = max(s.peakDiskUse, st.DiskBytes)
}

// run samples every second until ctx ends.
func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	s.take()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.take()
		}
	}
}

// resetPeaks starts new peaks; the samples are kept.
func (s *sampler) resetPeaks() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.peakRSS, s.peakAnon, s.peakHeap, s.peakDepth, s.peakDiskUse = 0, 0, 0, 0, 0
}

func (s *sampler) result() ([]sample, memPeaks) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sample(nil), s.samples...), memPeaks{SampledRSS: s.peakRSS, SampledRssAnon: s.peakAnon, SampledHeapInuse: s.peakHeap}
}

// memPeaks are the highest values the 1 s sampler saw; VmHWM is exact.
type memPeaks struct {
	VmHWM            uint64 `json:"vm_hwm"`
	SampledRSS       uint64 `json:"sampled_peak_vm_rss"`
	SampledRssAnon   uint64 `json:"sampled_peak_rss_anon"`
	SampledHeapInuse uint64 `json:"sampled_peak_heap_inuse"`
}

func (s *sampler) peaks() memPeaks {
	_, p := s.result()
	if m, err := readMem(); err == nil {
		p.VmHWM = m.VmHWM
	}
	return p
}

// appender appends generated events in agent-sized batches.
type appender struct {
	spool   *store.Spool
	gen     *benchevents.Gen
	notify  func()
	batch   [][]byte
	payload uint64        // payload bytes appended
	count   uint64        // records appended
	failed  uint64        // records whose append failed (quota refusal, full disk)
	busy    time.Duration // time spent in AppendBatch
	lastErr error
	log     *slog.Logger
}

func (a *appender) add(n int) error {
	for range n {
		b, err := a.gen.Payload()
		if err != nil {
			return err
		}
		a.batch = append(a.batch, b)
		if len(a.batch) >= spoolBatchLimit {
			a.flush()
		}
	}
	return nil
}

// flush appends the pending batch with one fsync; like the agent, a failed
// append drops the batch, is counted and logged, and the run goes on.
func (a *appender) flush() {
	if len(a.batch) == 0 {
		return
	}
	t0 := time.Now()
	_, err := a.spool.AppendBatch(store.ClassEvent, a.batch)
	a.busy += time.Since(t0)
	if err != nil {
		a.failed += uint64(len(a.batch))
		if a.lastErr == nil || err.Error() != a.lastErr.Error() {
			a.log.Warn("spool append failed; events dropped", "count", len(a.batch), "error", err)
		}
		a.lastErr = err
	} else {
		a.count += uint64(len(a.batch))
		for _, b := range a.batch {
			a.payload += uint64(len(b))
		}
		if a.notify != nil {
			a.notify()
		}
	}
	a.batch = a.batch[:0]
}

// produceAtRate models the agent's sensor → spool writer pipeline: a
// generator goroutine emits rate events/s for d into a queue (blocking when
// the queue is full: nothing is dropped, the shortfall shows as a lower
// achieved rate), and this goroutine appends them in batches every
// spoolFlush or spoolBatchLimit records, as agent.writeSpool does.
func (a *appender) produceAtRate(ctx context.Context, rate int, d time.Duration) error {
	queue := make(chan []byte, queueSize)
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	genErr := make(chan error, 1)
	go func() {
		defer close(queue)
		genErr <- generate(gctx, a.gen, queue, rate, d)
	}()
	tick := time.NewTicker(spoolFlush)
	defer tick.Stop()
	for {
		select {
		case b, ok := <-queue:
			if !ok {
				a.flush()
				return <-genErr
			}
			a.batch = append(a.batch, b)
			if len(a.batch) >= spoolBatchLimit {
				a.flush()
			}
		case <-tick.C:
			a.flush()
		}
	}
}

// queueSize is the sensor → spool writer queue.
const queueSize = 8192

// generate sends rate events/s into queue until d has passed.
func generate(ctx context.Context, gen *benchevents.Gen, queue chan<- []byte, rate int, d time.Duration) error {
	start := time.Now()
	deadline := start.Add(d)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	var produced int
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("generate: %w", context.Cause(ctx))
		case now := <-tick.C:
			if !now.Before(deadline) {
				return nil
			}
			for due := int(float64(rate)*now.Sub(start).Seconds()) - produced; due > 0; due-- {
				b, err := gen.Payload()
				if err != nil {
					return err
				}
				select {
				case queue <- b:
				case <-ctx.Done():
					return fmt.Errorf("generate: %w", context.Cause(ctx))
				}
				produced++
				if !time.Now().Before(deadline) {
					return nil
				}
			}
		}
	}
}

func openSpool(dir string, quota int64, log *slog.Logger) (*store.Spool, error) {
	sp, err := store.Open(store.Config{Dir: filepath.Join(dir, "spool"), QuotaBytes: quota}, log)
	if err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	return sp, nil
}

// newClient is the agent's uplink: spoolID is the spool's ID, as the agent
// sends it.
func newClient(pkiDir, addr, spoolID string, src *countingSource, log *slog.Logger) (*transport.Client, error) {
	tlsConf, err := transport.ClientTLS(filepath.Join(pkiDir, agentID+".crt"), filepath.Join(pkiDir, agentID+".key"), filepath.Join(pkiDir, "ca.crt"), "127.0.0.1")
	if err != nil {
		return nil, fmt.Errorf("agent TLS: %w", err)
	}
	c, err := transport.NewClient(transport.ClientConfig{
		Addr:    addr,
		TLS:     tlsConf,
		AgentID: agentID,
		SpoolID: spoolID,
		// Short backoff so "backend back" is noticed within about a second;
		// the drain rate is measured from the first ack anyway.
		BackoffMin: 100 * time.Millisecond,
		BackoffMax: time.Second,
		Gaps:       src.Gaps,
	}, src, log)
	if err != nil {
		return nil, fmt.Errorf("uplink client: %w", err)
	}
	return c, nil
}

// waitUntil polls cond every 50 ms until it holds, ctx ends or timeout passes.
func waitUntil(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not done after %s", what, timeout)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, context.Cause(ctx))
		case <-t.C:
		}
	}
	return nil
}

func eventDepth(sp *store.Spool) uint64 { return sp.Stats().Classes[store.ClassEvent].Depth }

// errGroup runs background goroutines and collects their errors.
type errGroup struct {
	wg   sync.WaitGroup
	mu   sync.Mutex
	errs []error
}

func (g *errGroup) Go(name string, f func() error) {
	g.wg.Go(func() {
		if err := f(); err != nil {
			g.mu.Lock()
			g.errs = append(g.errs, fmt.Errorf("%s: %w", name, err))
			g.mu.Unlock()
		}
	})
}

func (g *errGroup) Wait() error {
	g.wg.Wait()
	return errors.Join(g.errs...)
}
