package export

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// kafkaSink produces each record to a topic with franz-go's idempotent
// producer (acks from all in-sync replicas): the broker drops the
// producer's own retries by sequence number, so a record is written once
// per send. The key is the alert's ID: one alert's records share a
// partition (in order), and a compacted topic keeps its latest state.
type kafkaSink struct {
	cfg    KafkaConfig
	client *kgo.Client
	reply  string
	// written holds the records of the last send that were written after
	// the one that stopped it (to other partitions): the next send does
	// not produce them again.
	written map[uint64]bool
}

func newKafkaSink(c KafkaConfig) (*kafkaSink, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.DefaultProduceTopic(c.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), // idempotence needs acks=all (franz-go's default)
		kgo.RecordDeliveryTimeout(c.Timeout.Std()),
		kgo.ProducerLinger(0),
		kgo.ClientID("harrier"),
	}
	if c.TLS != nil {
		tc, err := clientTLS(*c.TLS)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if c.SASL != nil {
		pw, err := readSecret("kafka.sasl.passwordFile", c.SASL.PasswordFile)
		if err != nil {
			return nil, err
		}
		switch c.SASL.Mechanism {
		case "plain":
			opts = append(opts, kgo.SASL(plain.Auth{User: c.SASL.Username, Pass: string(pw)}.AsMechanism()))
		case "scram-sha-256":
			opts = append(opts, kgo.SASL(scram.Auth{User: c.SASL.Username, Pass: string(pw)}.AsSha256Mechanism()))
		case "scram-sha-512":
			opts = append(opts, kgo.SASL(scram.Auth{User: c.SASL.Username, Pass: string(pw)}.AsSha512Mechanism()))
		}
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka: %w", err)
	}
	return &kafkaSink{cfg: c, client: cl, written: map[uint64]bool{}}, nil
}

func (s *kafkaSink) send(ctx context.Context, msgs []message) (int, error) {
	recs := make([]*kgo.Record, 0, len(msgs))
	idx := make([]int, 0, len(msgs)) // msgs index of each record
	for i, m := range msgs {
		if s.written[m.seq] {
			continue
		}
		recs = append(recs, &kgo.Record{Key: []byte(m.head.GetId()), Value: m.body, Headers: []kgo.RecordHeader{
			{Key: "harrier-event-id", Value: []byte(m.head.GetId())},
			{Key: "harrier-detection-id", Value: []byte(m.head.GetDetectionId())},
		}})
		idx = append(idx, i)
	}
	s.written = map[uint64]bool{}
	if len(recs) == 0 {
		return len(msgs), nil
	}
	res := s.client.ProduceSync(ctx, recs...)
	stop, stopErr := -1, error(nil)
	for k, r := range res {
		i := idx[k]
		switch {
		case r.Err == nil && stop >= 0:
			s.written[msgs[i].seq] = true
		case r.Err == nil:
		case stop < 0:
			stop = i
			s.reply = fmt.Sprintf("record %s: %v", msgs[i].head.GetId(), r.Err)
			if kafkaRefused(r.Err) {
				stopErr = &RejectedError{Reason: s.reply}
			} else {
				stopErr = fmt.Errorf("kafka %s: %s", strings.Join(s.cfg.Brokers, ","), s.reply)
			}
		}
	}
	if stop >= 0 {
		return stop, stopErr
	}
	last := res[len(res)-1].Record
	s.reply = fmt.Sprintf("%d records written; last to %s/%d at offset %d", len(recs), last.Topic, last.Partition, last.Offset)
	return len(msgs), nil
}

// kafkaRefused: errors about the record itself, which sending it again
// cannot fix.
func kafkaRefused(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidRecord) || errors.Is(err, kerr.CorruptMessage)
}

func (s *kafkaSink) confirmAfter() time.Duration { return 0 }
func (s *kafkaSink) check() error                { return nil }
func (s *kafkaSink) lastReply() string           { return s.reply }
func (s *kafkaSink) close() error                { s.client.Close(); return nil }
