package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
)

// Store is what a replica fills from the stream: the backend's store,
// which de-duplicates on (agent, spool, sequence), and where it keeps how
// far into the stream it has applied.
type Store interface {
	Ingest(ctx context.Context, agentID string, b *api.Batch) ([]uint64, error)
	// StreamPosition is the last sequence applied of the named stream
	// ("": the records stream; "events": the raw events') (0: none).
	StreamPosition(ctx context.Context, name string) (uint64, error)
	SetStreamPosition(ctx context.Context, name string, seq uint64) error
}

// maxApply bounds the records applied in one store transaction.
const maxApply = 512

// Materializer reads the stream, in order, into a replica's store.
type Materializer struct {
	js     jetstream.JetStream
	cfg    Config
	stream string
	// position names the stream to the store ("" or "events").
	position string
	store    Store
	log      *slog.Logger
	// applied is the last stream sequence in the store; last the stream's
	// last sequence, as last seen.
	applied, last atomic.Uint64
	// undecodable counts messages that are not a batch: skipped.
	undecodable atomic.Uint64
	// removed counts messages the stream's retention removed before this
	// replica applied them (the raw events' stream only has limits).
	removed atomic.Uint64
	// control applies the backends' shared changes (ControlSubject), nil
	// when none are expected; refused counts those it refused.
	control func(ctx context.Context, seq uint64, change []byte) error
	refused atomic.Uint64
}

// SetControl makes apply receive the stream's control changes, in order
// with the records, with their stream sequence. Call it before Run.
func (m *Materializer) SetControl(apply func(ctx context.Context, seq uint64, change []byte) error) {
	m.control = apply
}

// Refused counts the control changes the applier refused (skipped).
func (m *Materializer) Refused() uint64 { return m.refused.Load() }

// WaitApplied returns once the store has applied stream sequence seq.
func (m *Materializer) WaitApplied(ctx context.Context, seq uint64) error {
	for m.applied.Load() < seq {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for this replica to apply stream message %d (applied %d): %w", seq, m.applied.Load(), ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// NewMaterializer reads c's records stream through js into store.
func NewMaterializer(js jetstream.JetStream, c Config, store Store, log *slog.Logger) *Materializer {
	return &Materializer{js: js, cfg: c.WithDefaults(), stream: c.WithDefaults().Stream, store: store, log: log}
}

// NewEventsMaterializer reads c's raw events stream through js into
// store's event store.
func NewEventsMaterializer(js jetstream.JetStream, c Config, store Store, log *slog.Logger) *Materializer {
	return &Materializer{js: js, cfg: c.WithDefaults(), stream: c.WithDefaults().EventsStream, position: "events", store: store,
		log: log.With("stream", c.WithDefaults().EventsStream)}
}

// Removed counts the messages the stream's retention removed before this
// replica applied them.
func (m *Materializer) Removed() uint64 { return m.removed.Load() }

// Lag is how many of the stream's messages this replica has not applied
// yet, as of the last message it read or the last stream check.
func (m *Materializer) Lag() uint64 {
	last, applied := m.last.Load(), m.applied.Load()
	if last <= applied {
		return 0
	}
	return last - applied
}

// Applied is the last stream sequence in the store.
func (m *Materializer) Applied() uint64 { return m.applied.Load() }

// Undecodable counts the stream's messages that were not a batch.
func (m *Materializer) Undecodable() uint64 { return m.undecodable.Load() }

// Run applies the stream from where the store stopped until ctx ends;
// it resumes after NATS outages by itself (the ordered consumer is made
// again from the last applied sequence).
func (m *Materializer) Run(ctx context.Context) error {
	pos, err := m.store.StreamPosition(ctx, m.position)
	if err != nil {
		return fmt.Errorf("replica's stream position: %w", err)
	}
	m.applied.Store(pos)
	streamReady := false
	for ctx.Err() == nil {
		var err error
		if !streamReady {
			// The stream, made (or its settings updated) once NATS
			// answers: a replica may start before its NATS servers.
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = EnsureStream(sctx, m.js, m.cfg)
			cancel()
			streamReady = err == nil
		}
		if streamReady {
			err = m.follow(ctx)
		}
		if ctx.Err() != nil {
			break
		}
		m.log.Warn("replica stopped following the stream; again in 1 s", "stream", m.stream, "applied", m.applied.Load(), "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

// follow applies messages until an error.
func (m *Materializer) follow(ctx context.Context) error {
	cons, err := m.js.OrderedConsumer(ctx, m.stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: m.applied.Load() + 1})
	if err != nil {
		return fmt.Errorf("ordered consumer: %w", err)
	}
	if info, err := m.js.Stream(ctx, m.stream); err == nil {
		m.last.Store(info.CachedInfo().State.LastSeq)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	var group groupedBatch
	for {
		msg, err := it.Next()
		if err != nil {
			return err
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("message metadata: %w", err)
		}
		if last := meta.Sequence.Stream + meta.NumPending; last > m.last.Load() {
			m.last.Store(last)
		}
		if next := max(m.applied.Load(), group.lastSeq) + 1; meta.Sequence.Stream > next {
			m.removed.Add(meta.Sequence.Stream - next)
			m.log.Warn("stream messages removed by the stream's limits before this replica applied them", "first", next,
				"last", meta.Sequence.Stream-1)
		}
		if msg.Subject() == ControlSubject {
			// In order: the records before it first, then the change.
			if err := m.apply(ctx, &group); err != nil {
				return err
			}
			if m.control != nil {
				if err := m.control(ctx, meta.Sequence.Stream, msg.Data()); err != nil {
					m.refused.Add(1)
					m.log.Warn("control change refused: skipped", "seq", meta.Sequence.Stream, "error", err)
				}
			}
			group.lastSeq = meta.Sequence.Stream
			if err := m.apply(ctx, &group); err != nil {
				return err
			}
			continue
		}
		var b api.Batch
		if err := proto.Unmarshal(msg.Data(), &b); err != nil || b.GetAgentId() == "" {
			m.undecodable.Add(1)
			m.log.Warn("stream message is not a batch: skipped", "seq", meta.Sequence.Stream, "error", err)
		} else if !group.add(&b) {
			if err := m.apply(ctx, &group); err != nil {
				return err
			}
			group.add(&b)
		}
		group.lastSeq = meta.Sequence.Stream
		// Apply when nothing more is waiting or the group is full: a
		// store transaction (and its fsync) per group, not per record.
		if meta.NumPending == 0 || len(group.batch.GetRecords()) >= maxApply {
			if err := m.apply(ctx, &group); err != nil {
				return err
			}
		}
	}
}

// apply stores the group and then the stream position after it. A crash
// between the two applies the group again, which the store's
// de-duplication absorbs.
func (m *Materializer) apply(ctx context.Context, g *groupedBatch) error {
	if g.lastSeq == 0 {
		return nil
	}
	if g.batch != nil {
		if _, err := m.store.Ingest(ctx, g.batch.GetAgentId(), g.batch); err != nil {
			return fmt.Errorf("apply stream messages up to %d: %w", g.lastSeq, err)
		}
	}
	if err := m.store.SetStreamPosition(ctx, m.position, g.lastSeq); err != nil {
		return fmt.Errorf("replica's stream position %d: %w", g.lastSeq, err)
	}
	m.applied.Store(g.lastSeq)
	*g = groupedBatch{}
	return nil
}

// groupedBatch merges consecutive messages of one agent's spool into one
// batch for the store.
type groupedBatch struct {
	batch   *api.Batch
	lastSeq uint64
}

// add merges b, or reports false when b belongs to another agent or spool
// (the group must be applied first).
func (g *groupedBatch) add(b *api.Batch) bool {
	if g.batch == nil {
		g.batch = &api.Batch{AgentId: b.GetAgentId(), SpoolId: b.GetSpoolId(), Sent: b.GetSent()}
	} else if g.batch.GetAgentId() != b.GetAgentId() || g.batch.GetSpoolId() != b.GetSpoolId() {
		return false
	}
	g.batch.Records = append(g.batch.Records, b.GetRecords()...)
	g.batch.Gaps = append(g.batch.Gaps, b.GetGaps()...)
	if b.GetHealth() != nil {
		g.batch.Health = b.GetHealth()
	}
	if b.GetSent() != nil {
		g.batch.Sent = b.GetSent()
	}
	return true
}

// ErrBehind is wrapped by Ready when the replica has not applied the
// stream yet.
var ErrBehind = errors.New("replica behind the stream")

// Ready says whether the replica has applied the whole stream as of its
// last look, so that its API answers as every other caught-up replica.
func (m *Materializer) Ready() error {
	if lag := m.Lag(); lag > 0 {
		return fmt.Errorf("%w: %d messages to apply", ErrBehind, lag)
	}
	return nil
}
