package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/sensor"
	"github.com/harrier-sec/harrier/sensor/execontent"
	"github.com/harrier-sec/harrier/store"
	"github.com/harrier-sec/harrier/transport"
)

// spoolFlush bounds how long an event waits before it is written to the
// spool; one fsync covers everything gathered meanwhile.
const (
	spoolFlush      = 100 * time.Millisecond
	idleTickFactor  = 8
	spoolBatchLimit = 512
)

// Run runs one node's pipeline until ctx is done: sensor → analytics →
// spool → uplink. ready is called once the spool is open, the sensor
// attached and every part started; the metrics server's /readyz answers
// ready from then on.
func Run(ctx context.Context, cfg Config, version string, log *slog.Logger, ready func()) error {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	kinds, err := api.ParseKinds(cfg.Spool.EventKinds)
	if err != nil {
		return fmt.Errorf("spool.eventKinds: %w", err)
	}
	defer routeKlog(log)()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// The identity is settled before anything starts: a certificate that
	// contradicts uplink.agentID is an error now, not a refusal in a loop.
	ident, err := newUplinkIdentity(cfg, log)
	if err != nil {
		return err
	}
	agentID := ident.agentID // "" while enrolling
	spool, err := store.Open(store.Config{Dir: filepath.Join(cfg.DataDir, "spool"), QuotaBytes: cfg.Spool.QuotaBytes}, log)
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	defer spool.Close()

	engine, err := NewEngine(cfg, log)
	if err != nil {
		return err
	}
	// The sensor's config was validated with the agent's: what fails now is
	// this node (kernel, privileges), and the agent runs what it can.
	var sens eventSource
	if s, err := sensor.New(cfg.Sensor, log); err != nil {
		log.Error("sensor unavailable on this node: no process, file or network events; "+
			"Kubernetes audit, admission, posture, inventory and the uplink keep running", "error", err)
		sens = newUnavailableSensor(err)
	} else {
		sens = s
	}
	defer sens.Close()
	// Loading the programs parsed the kernel's BTF (tens of MiB, garbage
	// now); hand those pages back at once rather than over the scavenger's
	// minutes, so that an idle agent's RSS is its working set.
	debug.FreeOSMemory()

	// The pipeline goroutine owns the engine; it publishes its counters here
	// for the heartbeat.
	var analyticsStats atomic.Pointer[analytics.Stats]
	var eventsCapped atomic.Uint64 // raw events not spooled over spool.maxEventsPerSec
	started := processStart()
	src := NewSpoolSource(spool)
	leaders := newLeaderRunner(log)
	nodeFindings := newNodePosture(cfg, log)
	admissions := newAdmissionSink()
	// The uplink's client exists once the agent has a certificate; with
	// enrollment that may be a while, and the sensor, analytics and spool
	// run meanwhile.
	up := &uplink{}
	var responder *responseRunner // started below, before the uplink's client
	exceptions := newExceptionsRunner(engine, cfg.DataDir, log)
	// Fixed once the engine is built; read here, before the pipeline runs it.
	rulesVersion, rulesLoaded := engine.RulesVersion(), uint32(engine.Stats().RulesLoaded)
	newClient := func(agentID string, tlsConf *tls.Config) (*transport.Client, error) {
		control, err := newControlHandler(agentID, cfg.Uplink.CAFile, responder, exceptions, log)
		if err != nil {
			return nil, err
		}
		return transport.NewClient(transport.ClientConfig{
			Addr:                 cfg.Uplink.Addr,
			FallbackAddrs:        cfg.Uplink.FallbackAddrs,
			TLS:                  tlsConf,
			AgentID:              agentID,
			SpoolID:              spool.ID(),
			BandwidthBytesPerSec: cfg.Uplink.BandwidthBytesPerSec,
			Health: func() *api.AgentHealth {
				h := health(version, cfg.Sensor.Node, started, sens, spool, analyticsStats.Load())
				h.Drops["spool_events_capped"] = eventsCapped.Load()
				h.Drops["admission_events_dropped"] = admissions.dropped.Load()
				h.Leader = leaders.Leading()
				h.NodeFindings = nodeFindings.Findings(time.Now())
				h.ResponsePoliciesSource, h.ResponsePoliciesVersion = responder.policiesState()
				h.RulesVersion, h.RulesLoaded = rulesVersion, rulesLoaded
				h.ExceptionsVersion = exceptions.version()
				return h
			},
			Gaps:    src.Gaps,
			Control: control.handle,
		}, src, log)
	}

	// Every part runs in g: the first to fail stops the others, and Run
	// returns only once all have ended, also when starting one fails.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	run := func(name string, f func() error) {
		g.Go(func() error {
			if err := f(); err != nil && ctx.Err() == nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	fail := func(err error) error {
		cancel()
		return errors.Join(err, g.Wait())
	}
	kp, err := startKube(ctx, cfg, run, log)
	if err != nil {
		return fail(err)
	}
	if err := startLeader(ctx, cfg, leaders, clusterEnv{cfg: cfg, spool: spool, notify: up.Notify, log: log}, run); err != nil {
		return fail(err)
	}
	guard, err := startAdmission(ctx, cfg, run, admissions, log)
	if err != nil {
		return fail(err)
	}
	responder = startResponse(ctx, cfg.Response, cfg.Uplink, cfg.Sensor.Node, cfg.DataDir, spool, up.Notify, run, log)
	events := make(chan *api.Event, sens.QueueSize())
	alertLatency := newAlertLatency()
	run("sensor", func() error { defer close(events); return sens.Run(ctx, events) })
	exes := exeContentReader(ctx, cfg.ExeContent, run)
	run("pipeline", func() error {
		return pipeline(events, responder.enrichThenObserve(kp.enrich), kp.audit, admissions.events, exes, engine, kinds, cfg.Spool.MaxEventsPerSec, spool, up.Notify, &analyticsStats, &eventsCapped, alertLatency, responder.offer, log)
	})
	run("uplink", func() error {
		client, err := ident.start(ctx, cfg, newClient, run)
		if err != nil || client == nil {
			return err
		}
		up.c.Store(client)
		return client.Run(ctx)
	})
	run("spool maintenance", func() error { return spool.Maintain(ctx, time.Minute) })
	// Ready: the spool is open, the sensor attached (what happens from now
	// on waits in its ring buffer) and every part started.
	var isReady atomic.Bool
	if cfg.MetricsAddr != "off" {
		queue := func() (int, int) { return len(events), cap(events) }
		collector := newPipelineCollector(sens, queue, &analyticsStats, &eventsCapped, spool, up)
		collectors := []prometheus.Collector{collector, leaders, alertLatency}
		if kp.audit != nil {
			collectors = append(collectors, newAuditCollector(kp.receiver, kp.tailer, func() (int, int) { return len(kp.audit), cap(kp.audit) }))
		}
		if guard != nil {
			collectors = append(collectors, newAdmissionCollector(guard.Handler, admissions))
		}
		collectors = append(collectors, responder.r)
		if exes != nil {
			collectors = append(collectors, exeContentCollector{exes})
		}
		run("metrics", func() error { return serveMetrics(ctx, cfg.MetricsAddr, log, isReady.Load, collectors...) })
	}
	isReady.Store(true)
	if ready != nil {
		ready()
	}
	log.Info("agent running", "agentID", agentID, "enroll", cfg.Uplink.Enroll.Server, "backend", cfg.Uplink.Addr, "dataDir", cfg.DataDir)
	return g.Wait()
}

// NewEngine builds the analytics engine from the config as given (Run
// fills in defaults first; `harrier events` leaves the baseline path empty so
// it learns in memory). Bad rule files are logged with file, line and
// reason; the rules that load keep running.
func NewEngine(cfg Config, log *slog.Logger) (*analytics.Engine, error) {
	rules, rerr := analytics.LoadRules(cfg.Analytics.RuleFiles...)
	engine, err := analytics.NewEngine(cfg.Analytics, rules, analytics.Options{
		Node: cfg.Sensor.Node, Supervisors: []uint32{uint32(os.Getppid())}, Log: log,
	})
	if engine == nil {
		return nil, fmt.Errorf("analytics: %w", err)
	}
	for _, one := range analytics.Problems(rerr, err) {
		log.Error("rule rejected; the other rules keep running", "error", one)
	}
	st := engine.Stats()
	log.Info("analytics ready", "rules", st.RulesLoaded, "rejected", st.RuleErrors+len(analytics.Problems(rerr)))
	return engine, nil
}

// pipeline gives every event its pod context (enrich), runs it, the
// Kubernetes audit events (audit, nil when off) and the admission guard's
// violations (admissions) through analytics and appends alerts and the
// configured raw event kinds to the spool in batches, until events closes;
// notify wakes the uplink.
// The spool is durable when AppendBatch returns; a failed append (full disk)
// is logged and counted by the spool, and the pipeline keeps going.
// exeContentReader starts the executable content reader unless cfg turns it
// off (then nil: nothing is offered).
func exeContentReader(ctx context.Context, cfg execontent.Config, run func(string, func() error)) *execontent.Reader {
	if cfg.Disabled {
		return nil
	}
	r := execontent.New(cfg, execontent.DefaultSignatures())
	run("exe-content", func() error { return r.Run(ctx) })
	return r
}

func pipeline(events <-chan *api.Event, enrich func(*api.Event), audit, admissions <-chan *api.Event, exes *execontent.Reader, engine *analytics.Engine, kinds map[api.EventKind]bool, maxPerSec int, spool *store.Spool,
	notify func(), stats *atomic.Pointer[analytics.Stats], capped *atomic.Uint64, alertLatency prometheus.Observer, respond func(*api.Alert), log *slog.Logger) error {
	// The flush timer runs every spoolFlush while events flow and backs off
	// (doubling, up to idleTickFactor × spoolFlush) on a quiet node, so an
	// idle agent does not wake ten times a second; alerts never wait for it.
	tick := time.NewTimer(spoolFlush)
	defer tick.Stop()
	wait, busy := spoolFlush, false
	// A one-second window is enough for a cap on raw events; alerts bypass it.
	windowStart, inWindow := time.Now(), 0
	allow := func() bool {
		if maxPerSec < 0 {
			return true
		}
		if now := time.Now(); now.Sub(windowStart) >= time.Second {
			windowStart, inWindow = now, 0
		}
		if inWindow >= maxPerSec {
			capped.Add(1)
			return false
		}
		inWindow++
		return true
	}
	enc, err := newRecordEncoder()
	if err != nil {
		return err
	}
	var batch, alerts [][]byte
	var behaviourAt []time.Time // per new alert: the event that raised it (zero for updates)
	emit := func(a *api.Alert) {
		b, err := proto.Marshal(&api.Record{Class: api.RecordClass_RECORD_CLASS_ALERT, Payload: &api.Record_Alert{Alert: a}})
		if err != nil {
			log.Error("encode alert", "detection", a.GetDetectionId(), "error", err)
			return
		}
		alerts = append(alerts, b)
		var at time.Time // updates of open alerts are sent on a timer: not a latency
		if a.GetCount() == 1 {
			at = a.GetFirstSeen().AsTime()
			respond(a) // a new alert only: its process was acted on already
		}
		behaviourAt = append(behaviourAt, at)
	}
	publish := func() {
		s := engine.Stats()
		stats.Store(&s)
	}
	flush := func() {
		if len(alerts) > 0 {
			if _, err := spool.AppendBatch(store.ClassAlert, alerts); err != nil {
				log.Error("spool append failed; alerts dropped", "count", len(alerts), "error", err)
			} else {
				now := time.Now()
				for _, at := range behaviourAt {
					if !at.IsZero() {
						alertLatency.Observe(max(now.Sub(at), 0).Seconds())
					}
				}
			}
			alerts, behaviourAt = alerts[:0], behaviourAt[:0]
			notify()
			publish() // the metrics count an alert as soon as it is spooled
		}
		if len(batch) == 0 {
			return
		}
		if _, err := spool.AppendBatch(store.ClassEvent, batch); err != nil {
			log.Warn("spool append failed; events dropped", "count", len(batch), "error", err)
		} else if len(batch) >= spoolBatchLimit {
			// Raw events below a full batch wait for the uplink's poll
			// (transport.DefaultPollInterval, a second): one round trip a
			// second instead of one per flush saves the uplink, QUIC and
			// the spool's acks nine wake-ups in ten. Alerts go at once.
			notify()
		}
		batch = batch[:0]
	}
	// controlPlane analyses an event from the API server's side (audit,
	// admission guard), or an executable's content, and, like raw events,
	// spools it when its kind is configured; it has no pod context to add.
	var exeContents <-chan *api.Event // nil: never ready
	if exes != nil {
		exeContents = exes.Events()
	}
	controlPlane := func(ev *api.Event) {
		busy = true
		engine.Process(ev, emit)
		if len(alerts) > 0 {
			flush()
		}
		if kinds[ev.GetKind()] && allow() {
			if b, err := enc.encode(ev); err == nil {
				batch = append(batch, b)
			}
		}
	}
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				if err := engine.Close(emit); err != nil {
					log.Warn("analytics close", "error", err)
				}
				flush()
				publish()
				return nil
			}
			if !busy && wait > spoolFlush {
				// The first event after a quiet spell: back to the busy pace
				// at once, so counters and raw events do not lag.
				wait = spoolFlush
				tick.Reset(wait)
			}
			busy = true
			enrich(ev)
			engine.Process(ev, emit)
			if exes != nil && ev.GetKind() == api.EventKind_EVENT_KIND_EXEC {
				exes.Offer(ev) // after enrichment: its content event shares the pod context
			}
			if len(alerts) > 0 {
				flush() // alerts do not wait for the batch timer
			}
			if !kinds[ev.GetKind()] || !allow() {
				continue
			}
			b, err := enc.encode(ev)
			if err != nil {
				log.Warn("encode event", "error", err)
				continue
			}
			batch = append(batch, b)
			if len(batch) >= spoolBatchLimit {
				flush()
			}
		case ev := <-audit:
			controlPlane(ev)
		case ev := <-admissions:
			controlPlane(ev)
		case ev := <-exeContents:
			controlPlane(ev) // made from an enriched exec: nothing to add
		case now := <-tick.C:
			engine.Tick(now, emit)
			flush()
			publish()
			if busy {
				wait = spoolFlush
			} else {
				wait = min(2*wait, idleTickFactor*spoolFlush)
			}
			busy = false
			tick.Reset(wait)
		}
	}
}

// SpoolSource adapts the spool to the uplink (it is a transport.Source).
// Spool sequence numbers count per class; on the wire the class sits in the
// top byte so that (agent, seq) stays unique across classes for the
// backend's de-duplication.
type SpoolSource struct {
	spool *store.Spool
}

// NewSpoolSource adapts spool for transport.NewClient.
func NewSpoolSource(spool *store.Spool) *SpoolSource { return &SpoolSource{spool: spool} }

const classShift = 56

func wireSeq(id store.RecordID) uint64 { return uint64(id.Class)<<classShift | id.Seq }

func recordID(seq uint64) store.RecordID {
	return store.RecordID{Class: store.Class(seq >> classShift), Seq: seq & (1<<classShift - 1)}
}

// Pending returns the next records to send, alerts first.
func (s *SpoolSource) Pending(_ context.Context, maxRecords, maxBytes int) ([]*api.Record, error) {
	recs, err := s.spool.Next(maxRecords, maxBytes)
	if err != nil {
		return nil, err
	}
	out := make([]*api.Record, 0, len(recs))
	var bad []store.RecordID
	for _, r := range recs {
		rec := &api.Record{}
		if err := proto.Unmarshal(r.Payload, rec); err != nil {
			// Cannot happen for records this agent wrote; drop rather than
			// block the uplink forever.
			bad = append(bad, r.RecordID)
			continue
		}
		rec.Seq = wireSeq(r.RecordID)
		out = append(out, rec)
	}
	if len(bad) > 0 {
		if err := s.spool.Ack(bad...); err != nil {
			return nil, fmt.Errorf("drop undecodable spool records: %w", err)
		}
	}
	return out, nil
}

// PendingRaw is Pending with the records as the spool holds them, marshaled
// (transport.RawSource): the uplink frames them without decoding each.
func (s *SpoolSource) PendingRaw(_ context.Context, maxRecords, maxBytes int) ([]transport.RawRecord, error) {
	recs, err := s.spool.Next(maxRecords, maxBytes)
	if err != nil {
		return nil, err
	}
	out := make([]transport.RawRecord, len(recs))
	for i, r := range recs {
		out[i] = transport.RawRecord{Seq: wireSeq(r.RecordID), Payload: r.Payload}
	}
	return out, nil
}

// Acked releases what the backend stored.
func (s *SpoolSource) Acked(seqs []uint64) error {
	ids := make([]store.RecordID, len(seqs))
	for i, seq := range seqs {
		ids[i] = recordID(seq)
	}
	return s.spool.Ack(ids...)
}

// Gaps reports evictions upstream once (for transport.ClientConfig.Gaps).
// They are marked reported when handed to the uplink: a gap report lost with
// a failed batch is the one thing that may go missing, and the spool's own
// counters still hold it.
func (s *SpoolSource) Gaps() []*api.Gap {
	gaps, err := s.spool.Gaps()
	if err != nil || len(gaps) == 0 {
		return nil
	}
	out := make([]*api.Gap, 0, len(gaps))
	for _, g := range gaps {
		out = append(out, &api.Gap{
			Class:    recordClass(g.Class),
			FirstSeq: wireSeq(store.RecordID{Class: g.Class, Seq: g.FirstSeq}),
			LastSeq:  wireSeq(store.RecordID{Class: g.Class, Seq: g.LastSeq}),
			Count:    g.Count,
			Time:     timestamppb.New(g.EvictedAt),
		})
	}
	if err := s.spool.MarkGapsReported(gaps...); err != nil {
		return nil
	}
	return out
}

func recordClass(c store.Class) api.RecordClass {
	switch c {
	case store.ClassAlert:
		return api.RecordClass_RECORD_CLASS_ALERT
	case store.ClassFinding:
		return api.RecordClass_RECORD_CLASS_FINDING
	}
	return api.RecordClass_RECORD_CLASS_EVENT
}
