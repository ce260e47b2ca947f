package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/sensor"
	"github.com/harrier-sec/harrier/store"
	"github.com/harrier-sec/harrier/transport"
)

// spoolFlush bounds how long an event waits before it is written to the
// spool; one fsync covers everything gathered meanwhile.
const (
	spoolFlush      = 100 * time.Millisecond
	spoolBatchLimit = 512
)

// Run runs one node's pipeline until ctx is done: sensor → spool → uplink.
// (Analytics joins between sensor and spool when it lands; until then the
// agent ships raw events.) ready is called once the sensor is attached.
func Run(ctx context.Context, cfg Config, version string, log *slog.Logger, ready func()) error {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	kinds, err := sensor.ParseKinds(cfg.Spool.EventKinds)
	if err != nil {
		return fmt.Errorf("spool.eventKinds: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	tlsConf, err := transport.ClientTLS(cfg.Uplink.CertFile, cfg.Uplink.KeyFile, cfg.Uplink.CAFile, cfg.Uplink.ServerName)
	if err != nil {
		return fmt.Errorf("uplink TLS (make certificates with `harrier certs`, or set uplink.caFile/certFile/keyFile): %w", err)
	}
	spool, err := store.Open(store.Config{Dir: filepath.Join(cfg.DataDir, "spool"), QuotaBytes: cfg.Spool.QuotaBytes}, log)
	if err != nil {
		return fmt.Errorf("open spool: %w", err)
	}
	defer spool.Close()

	sens, err := sensor.New(cfg.Sensor, log)
	if err != nil {
		return fmt.Errorf("start sensor: %w", err)
	}
	defer sens.Close()
	if ready != nil {
		ready()
	}

	agentID := cfg.Uplink.AgentID
	started := processStart()
	src := NewSpoolSource(spool)
	client, err := transport.NewClient(transport.ClientConfig{
		Addr:                 cfg.Uplink.Addr,
		TLS:                  tlsConf,
		AgentID:              agentID,
		BandwidthBytesPerSec: cfg.Uplink.BandwidthBytesPerSec,
		Health:               func() *api.AgentHealth { return health(version, cfg.Sensor.Node, started, sens, spool) },
		Gaps:                 src.Gaps,
	}, src, log)
	if err != nil {
		return fmt.Errorf("uplink: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan *api.Event, sens.QueueSize())
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	run := func(name string, f func() error) {
		wg.Go(func() {
			if err := f(); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		})
	}
	run("sensor", func() error { defer close(events); return sens.Run(ctx, events) })
	run("spool writer", func() error { return writeSpool(events, kinds, spool, client, log) })
	run("uplink", func() error { return client.Run(ctx) })
	run("spool maintenance", func() error { return spool.Maintain(ctx, time.Minute) })
	log.Info("agent running", "agentID", agentID, "backend", cfg.Uplink.Addr, "dataDir", cfg.DataDir)
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// writeSpool appends events to the spool in batches until events closes.
// The spool is durable when AppendBatch returns; a failed append (full
// disk) is logged and counted by the spool, and the pipeline keeps going.
func writeSpool(events <-chan *api.Event, kinds map[api.EventKind]bool, spool *store.Spool, client *transport.Client, log *slog.Logger) error {
	tick := time.NewTicker(spoolFlush)
	defer tick.Stop()
	var batch [][]byte
	flush := func() {
		if len(batch) == 0 {
			return
		}
		if _, err := spool.AppendBatch(store.ClassEvent, batch); err != nil {
			log.Warn("spool append failed; events dropped", "count", len(batch), "error", err)
		} else {
			client.Notify()
		}
		batch = batch[:0]
	}
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				flush()
				return nil
			}
			if !kinds[ev.GetKind()] {
				continue
			}
			b, err := proto.Marshal(&api.Record{Class: api.RecordClass_RECORD_CLASS_EVENT, Payload: &api.Record_Event{Event: ev}})
			if err != nil {
				log.Warn("encode event", "error", err)
				continue
			}
			batch = append(batch, b)
			if len(batch) >= spoolBatchLimit {
				flush()
			}
		case <-tick.C:
			flush()
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
