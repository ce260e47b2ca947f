package export

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// message is one encoded record on its way out.
type message struct {
	seq  uint64 // in its kind's ingest order
	kind Kind   // "" in `exports test`: an alert
	// head is the record's header fields in alert form (Record.head).
	head *api.Alert
	body []byte
}

// RejectedError is a destination refusing one record as malformed: the
// record goes to the dead-letter list and the export moves on. Every other
// error is taken as the destination being unavailable, and retried.
type RejectedError struct{ Reason string }

func (e *RejectedError) Error() string { return "rejected by the destination: " + e.Reason }

// sink is one destination's transport.
type sink interface {
	// send delivers msgs in order and returns how many it delivered. With
	// a *RejectedError, msgs[n] was refused and the rest not tried.
	send(ctx context.Context, msgs []message) (n int, err error)
	// confirmAfter is how long after a write a record counts as delivered
	// (0: when send returns).
	confirmAfter() time.Duration
	// check reports a connection that died since the last send.
	check() error
	// lastReply describes what the destination answered last.
	lastReply() string
	close() error
}

func newSink(c Config, hostname, version string) (sink, error) {
	switch c.Type {
	case TypeSyslog:
		return newSyslogSink(*c.Syslog, hostname)
	case TypeWebhook:
		return newWebhookSink(*c.Webhook)
	case TypeFile:
		return newFileSink(*c.File), nil
	case TypeOTLP:
		return newOTLPSink(*c.OTLP, version)
	case TypeSplunk:
		return newSplunkSink(*c.Splunk)
	case TypeElastic:
		return newElasticSink(*c.Elastic)
	case TypeKafka:
		return newKafkaSink(*c.Kafka)
	}
	return nil, fmt.Errorf("type %q: must be %s", c.Type, typeList)
}

// target is where a destination sends, for the API and logs: no secrets.
func (c Config) target() string {
	switch {
	case c.Syslog != nil:
		return c.Syslog.Network + "://" + c.Syslog.Address
	case c.Webhook != nil:
		return redactURL(c.Webhook.URL)
	case c.File != nil:
		return c.File.Path
	case c.OTLP != nil:
		if c.OTLP.Protocol == OTLPHTTP {
			return redactURL(c.OTLP.Endpoint)
		}
		return "grpc://" + c.OTLP.Endpoint
	case c.Splunk != nil:
		return redactURL(c.Splunk.URL)
	case c.Elastic != nil:
		return redactURL(c.Elastic.URL)
	case c.Kafka != nil:
		return "kafka://" + strings.Join(c.Kafka.Brokers, ",") + "/" + c.Kafka.Topic
	}
	return ""
}

// readSecret reads a secret file, trimming one trailing newline.
func readSecret(what, path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%s %s: empty", what, path)
	}
	return b, nil
}
