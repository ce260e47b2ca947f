// Package replicate runs several backend replicas over one NATS JetStream
// stream (issue 19). Each replica publishes the records its agents upload
// to the stream, one message per record with a message ID made of (agent,
// spool, sequence), and acknowledges the agent only once the stream has
// acknowledged every message: JetStream replicates the stream (Raft, three
// ways by default) and drops a repeated message ID within its duplicate
// window. Each replica then reads the whole stream, in order, into its own
// store, which de-duplicates on (agent, spool, sequence) for ever: a record
// the stream keeps twice (a retry past the window) is stored once.
//
// The package knows NATS and the wire format; the store it fills is behind
// the Store interface (backend.BadgerStore in the product).
package replicate

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/harrier-sec/harrier/internal/confval"
)

// Defaults of Config.
const (
	DefaultStream          = "HARRIER"
	DefaultReplicas        = 3
	DefaultDuplicateWindow = 10 * time.Minute
	DefaultEventsStream    = "HARRIER_EVENTS"
	DefaultEventsMaxBytes  = 4 << 30
	DefaultEventsMaxAge    = 72 * time.Hour
	// Subject is where records are published; ControlSubject where the
	// backends' own changes (response policies, commands, agents'
	// answers) are. One stream holds both, so its order is the order every
	// replica applies.
	Subject        = "harrier.records"
	ControlSubject = "harrier.control"
	// EventsSubject is where raw events are published, in a stream of
	// their own whose size and age are bounded: they are many, and the
	// records made from them (alerts, findings) are kept in the main
	// stream for ever.
	EventsSubject = "harrier.events"
)

// Config is the backend's `cluster:` section.
type Config struct {
	// Servers are NATS URLs (nats://host:4222, tls://host:4222); the
	// client fails over between them.
	Servers []string `json:"servers"`
	// Stream is the JetStream stream's name (default HARRIER); Replicas
	// its replication factor (default 3; 1 for a single NATS server).
	Stream   string `json:"stream,omitempty"`
	Replicas int    `json:"replicas,omitempty"`
	// DuplicateWindow is how long the stream remembers message IDs
	// (default 10m): a retry within it is dropped by the stream, one past
	// it is stored twice in the stream and once by every replica.
	DuplicateWindow confval.Duration `json:"duplicateWindow,omitempty"`
	// EventsStream holds the raw events (default HARRIER_EVENTS), at most
	// EventsMaxBytes (default 4 GiB) and EventsMaxAge (default 72h): the
	// oldest are removed first. A replica that falls further behind than
	// that skips what was removed (counted).
	EventsStream   string           `json:"eventsStream,omitempty"`
	EventsMaxBytes int64            `json:"eventsMaxBytes,omitempty"`
	EventsMaxAge   confval.Duration `json:"eventsMaxAge,omitempty"`
	// TLS to the NATS servers: their CA, and a client certificate when
	// they require one. NKeySeedFile authenticates with an NKey instead
	// of (or besides) the certificate.
	CAFile       string `json:"caFile,omitempty"`
	CertFile     string `json:"certFile,omitempty"`
	KeyFile      string `json:"keyFile,omitempty"`
	NKeySeedFile string `json:"nkeySeedFile,omitempty"`
	// ReplicaName names this replica in the stream's consumer and in logs
	// (default: the host name).
	ReplicaName string `json:"replicaName,omitempty"`
}

// WithDefaults fills the defaults.
func (c Config) WithDefaults() Config {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = confval.Duration(DefaultDuplicateWindow)
	}
	if c.EventsStream == "" {
		c.EventsStream = DefaultEventsStream
	}
	if c.EventsMaxBytes == 0 {
		c.EventsMaxBytes = DefaultEventsMaxBytes
	}
	if c.EventsMaxAge == 0 {
		c.EventsMaxAge = confval.Duration(DefaultEventsMaxAge)
	}
	if c.ReplicaName == "" {
		c.ReplicaName, _ = os.Hostname()
	}
	return c
}

// Validate says what is wrong with c, every problem at once.
func (c Config) Validate() error {
	var errs []error
	if len(c.Servers) == 0 {
		errs = append(errs, errors.New("cluster.servers: at least one NATS URL is required"))
	}
	for _, s := range c.Servers {
		if !strings.HasPrefix(s, "nats://") && !strings.HasPrefix(s, "tls://") {
			errs = append(errs, fmt.Errorf("cluster.servers: %q: want nats://host:port or tls://host:port", s))
		}
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("cluster.replicas %d: JetStream allows 1 to 5", c.Replicas))
	}
	if c.DuplicateWindow < 0 {
		errs = append(errs, errors.New("cluster.duplicateWindow: must not be negative"))
	}
	if c.EventsMaxBytes < 0 {
		errs = append(errs, errors.New("cluster.eventsMaxBytes: must not be negative"))
	}
	if c.EventsMaxAge < 0 {
		errs = append(errs, errors.New("cluster.eventsMaxAge: must not be negative"))
	}
	if c.Stream != "" && c.Stream == c.EventsStream {
		errs = append(errs, fmt.Errorf("cluster.eventsStream %q: must differ from cluster.stream", c.EventsStream))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("cluster.certFile and cluster.keyFile go together"))
	}
	return errors.Join(errs...)
}

// Connect dials the NATS servers with c's credentials. The connection
// reconnects by itself for ever; name says who it is in the servers'
// monitoring; extra options come last (a test's dialer).
func Connect(c Config, name string, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(500 * time.Millisecond),
		nats.RetryOnFailedConnect(true)}
	if c.CAFile != "" || c.CertFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return nil, fmt.Errorf("cluster.caFile: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("cluster.caFile %s: no PEM certificate", c.CAFile)
			}
		}
		if c.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("cluster.certFile/keyFile: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, nats.Secure(tc))
	}
	if c.NKeySeedFile != "" {
		opt, err := nats.NkeyOptionFromSeed(c.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("cluster.nkeySeedFile: %w", err)
		}
		opts = append(opts, opt)
	}
	opts = append(opts, extra...)
	nc, err := nats.Connect(strings.Join(c.Servers, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("NATS %s: %w", strings.Join(c.Servers, ","), err)
	}
	return nc, nil
}
