package replicate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
)

// Header names on each message.
const (
	headerAgent = "Harrier-Agent"
)

// Publisher keeps agents' batches in the stream: it is the ingest server's
// sink (transport.Sink) in a replicated backend.
type Publisher struct {
	js                   jetstream.JetStream
	stream, eventsStream string
	log                  *slog.Logger
}

// EnsureStream creates the streams (records and raw events), or updates
// their settings, so that every replica starts against the same ones.
func EnsureStream(ctx context.Context, js jetstream.JetStream, c Config) error {
	c = c.WithDefaults()
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:     c.EventsStream,
		Subjects: []string{EventsSubject},
		Storage:  jetstream.FileStorage,
		Replicas: c.Replicas,
		// JetStream wants the window within the age limit.
		Duplicates: min(c.DuplicateWindow.Std(), c.EventsMaxAge.Std()),
		Retention:  jetstream.LimitsPolicy,
		MaxBytes:   c.EventsMaxBytes,
		MaxAge:     c.EventsMaxAge.Std(),
		Discard:    jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("JetStream stream %s (replicas %d): %w", c.EventsStream, c.Replicas, err)
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       c.Stream,
		Subjects:   []string{Subject, ControlSubject},
		Storage:    jetstream.FileStorage,
		Replicas:   c.Replicas,
		Duplicates: c.DuplicateWindow.Std(),
		// Every replica reads it all; nothing is removed by a consumer.
		Retention: jetstream.LimitsPolicy,
	})
	if err != nil {
		return fmt.Errorf("JetStream stream %s (replicas %d): %w", c.Stream, c.Replicas, err)
	}
	return nil
}

// NewPublisher publishes to c's stream through js.
func NewPublisher(js jetstream.JetStream, c Config, log *slog.Logger) *Publisher {
	c = c.WithDefaults()
	return &Publisher{js: js, stream: c.Stream, eventsStream: c.EventsStream, log: log}
}

// PublishControl publishes a change of the backends' shared state and
// returns its stream sequence once the stream has it.
func (p *Publisher) PublishControl(ctx context.Context, change []byte) (uint64, error) {
	ack, err := p.js.Publish(ctx, ControlSubject, change, jetstream.WithExpectStream(p.stream))
	if err != nil {
		return 0, fmt.Errorf("publish a control change: %w", err)
	}
	return ack.Sequence, nil
}

// MsgID is a record's message ID: the stream drops a second message with
// the same ID within its duplicate window.
func MsgID(agentID, spoolID string, seq uint64) string {
	return agentID + "/" + spoolID + "/" + strconv.FormatUint(seq, 10)
}

// Store publishes each record of b as a message of its own (with the
// batch's agent and spool) and the batch's health and gaps as one more,
// then waits for the stream's acknowledgements: the sequence numbers whose
// message the stream acknowledged (stored, or a duplicate of a stored one)
// are returned, to be acknowledged to the agent; the rest it sends again.
func (p *Publisher) Store(ctx context.Context, agentID string, b *api.Batch) ([]uint64, error) {
	if b.GetAgentId() != "" && b.GetAgentId() != agentID {
		return nil, fmt.Errorf("batch names agent %q, connection is agent %q", b.GetAgentId(), agentID)
	}
	type pending struct {
		seq uint64
		ack jetstream.PubAckFuture
	}
	var futures []pending
	var errs []error
	publish := func(seq uint64, one *api.Batch, id string) {
		data, err := proto.Marshal(one)
		if err != nil {
			errs = append(errs, fmt.Errorf("record %d: %w", seq, err))
			return
		}
		subject, stream := Subject, p.stream
		if len(one.GetRecords()) == 1 && one.GetRecords()[0].GetClass() == api.RecordClass_RECORD_CLASS_EVENT {
			subject, stream = EventsSubject, p.eventsStream
		}
		msg := nats.NewMsg(subject)
		msg.Data = data
		msg.Header.Set(headerAgent, agentID)
		f, err := p.js.PublishMsgAsync(msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(stream))
		if err != nil {
			errs = append(errs, fmt.Errorf("publish record %d: %w", seq, err))
			return
		}
		futures = append(futures, pending{seq, f})
	}
	for _, r := range b.GetRecords() {
		publish(r.GetSeq(), &api.Batch{AgentId: agentID, SpoolId: b.GetSpoolId(), Sent: b.GetSent(), Records: []*api.Record{r}},
			MsgID(agentID, b.GetSpoolId(), r.GetSeq()))
	}
	if b.GetHealth() != nil || len(b.GetGaps()) > 0 {
		meta := &api.Batch{AgentId: agentID, SpoolId: b.GetSpoolId(), Sent: b.GetSent(), Health: b.GetHealth(), Gaps: b.GetGaps()}
		data, err := proto.Marshal(meta)
		if err == nil {
			// Its content is its ID: a resent heartbeat is the same one.
			sum := sha256.Sum256(data)
			publish(0, meta, agentID+"/"+b.GetSpoolId()+"/meta/"+hex.EncodeToString(sum[:12]))
		}
	}
	acked := make([]uint64, 0, len(futures))
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	metaFailed := false
	for _, f := range futures {
		select {
		case <-f.ack.Ok():
			if f.seq != 0 {
				acked = append(acked, f.seq)
			}
		case err := <-f.ack.Err():
			errs = append(errs, fmt.Errorf("record %d not stored by the stream: %w", f.seq, err))
			metaFailed = metaFailed || f.seq == 0
		case <-ctx.Done():
			return acked, ctx.Err()
		case <-timeout.C:
			return acked, errors.Join(append(errs, errors.New("no acknowledgement from the stream within 30 s"))...)
		}
	}
	if len(errs) > 0 {
		p.log.Warn("stream publish", "agent", agentID, "acked", len(acked), "records", len(b.GetRecords()), "error", errors.Join(errs...))
		if len(acked) == 0 || metaFailed {
			return acked, errors.Join(errs...)
		}
	}
	return acked, nil
}
