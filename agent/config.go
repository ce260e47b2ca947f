// Package agent wires one node's pipeline (sensor → analytics → spool →
// uplink) and holds its configuration. It knows nothing of the backend
// beyond the uplink's address: the all-in-one mode, which embeds one, is
// package allinone.
package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
	"github.com/harrier-sec/harrier/kube"
	"github.com/harrier-sec/harrier/sensor"
	"github.com/harrier-sec/harrier/sensor/execontent"
	"github.com/harrier-sec/harrier/transport"
)

// DefaultDataDir holds the spool, state and certificates.
const DefaultDataDir = "/var/lib/harrier"

// Config is the agent's configuration, loaded from one YAML file (`harrier
// agent -c`). Every section is optional.
type Config struct {
	// DataDir holds the spool, the agent's state and, by default, its
	// certificates (pki/).
	DataDir   string           `json:"dataDir,omitempty"`
	Sensor    sensor.Config    `json:"sensor"`
	Analytics analytics.Config `json:"analytics"`
	Spool     SpoolConfig      `json:"spool"`
	Uplink    UplinkConfig     `json:"uplink"`
	// Kube gives events their pod context (see the kube package).
	Kube kube.Config `json:"kube"`
	// Response acts on alerts per policies (see the response package).
	Response ResponseConfig `json:"response"`
	// ExeContent reads each executed file once, for its hash and the known
	// tools it holds (see the sensor/execontent package).
	ExeContent execontent.Config `json:"exeContent"`
	// MetricsAddr is where the agent serves Prometheus /metrics (default
	// 127.0.0.1:9473; "off" disables it).
	MetricsAddr string `json:"metricsAddr,omitempty"`
}

// ResponseConfig is the `response:` section.
type ResponseConfig struct {
	// PolicyFile is a response policy file (kind ResponsePolicies); empty:
	// no response.
	PolicyFile string `json:"policyFile,omitempty"`
}

// SpoolConfig sizes the offline spool and says which raw events it keeps.
type SpoolConfig struct {
	// QuotaBytes bounds the spool's disk use (default 1 GiB).
	QuotaBytes int64 `json:"quotaBytes,omitempty"`
	// EventKinds are the raw event kinds shipped to the backend (default:
	// every kind but fork and exit, which are high-volume and already
	// folded into every event's process and ancestry).
	EventKinds []string `json:"eventKinds,omitempty"`
	// MaxEventsPerSec caps the raw events spooled per second (default
	// 1000; -1 for no cap). Shipping a raw event costs far more than
	// detecting on it (encode, two Badger writes, compression, QUIC), so
	// under load raw events are the first thing to go: alerts, which carry
	// their evidence events, are never capped. What is skipped is counted.
	MaxEventsPerSec int `json:"maxEventsPerSec,omitempty"`
}

// DefaultSpoolEventKinds is the default of SpoolConfig.EventKinds.
func DefaultSpoolEventKinds() []string {
	return []string{"exec", "file_open", "file_unlink", "file_rename", "connect", "listen", "accept", "ptrace",
		"module_load", "namespace_change", "memfd_create", "credential_change", "mount"}
}

// UplinkConfig says where and how the agent delivers to its backend.
type UplinkConfig struct {
	// Addr is the backend's QUIC ingest address (host:port, UDP).
	Addr string `json:"addr,omitempty"`
	// FallbackAddrs are the other replicas of a replicated backend: when
	// the current one cannot be dialled the next is tried, in turn (a name
	// with several DNS records counts as each). Every replica's
	// certificate must carry ServerName.
	FallbackAddrs []string `json:"fallbackAddrs,omitempty"`
	// ServerName is the name the backend's certificate must carry
	// (default: the host part of Addr).
	ServerName string `json:"serverName,omitempty"`
	// AgentID is optional: the agent's identity is the one its certificate
	// names (URI SAN harrier://agent/<id>, or the CommonName). Set, it pins
	// the identity: a certificate naming another agent stops the agent at
	// start with an error naming both. It is also the ID a bootstrap
	// enrollment asks for (default: the node name).
	AgentID string `json:"agentID,omitempty"`
	// CAFile pins the CA; CertFile and KeyFile are the agent's identity.
	// Defaults: <dataDir>/pki/{ca.crt,agent.crt,agent.key}.
	CAFile   string `json:"caFile,omitempty"`
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
	// BandwidthBytesPerSec caps upload on slow edge links (0: no cap).
	BandwidthBytesPerSec int64 `json:"bandwidthBytesPerSec,omitempty"`
	// Enroll, when its server is set, gets CertFile/KeyFile from the
	// backend when they are missing or expired, and renews them.
	Enroll EnrollConfig `json:"enroll"`
}

// WithDefaults returns cfg with every unset path and address filled in.
func WithDefaults(cfg Config) Config { return cfg.withDefaults() }

func (c Config) withDefaults() Config {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Sensor.Node == "" {
		c.Sensor.Node, _ = os.Hostname()
	}
	if c.Kube.Node == "" {
		c.Kube.Node = c.Sensor.Node
	}
	if c.MetricsAddr == "" {
		c.MetricsAddr = DefaultMetricsAddr
	}
	if c.Analytics.Baseline.Path == "" {
		c.Analytics.Baseline.Path = filepath.Join(c.DataDir, "baselines.json")
	}
	if c.Spool.MaxEventsPerSec == 0 {
		c.Spool.MaxEventsPerSec = 1000
	}
	if len(c.Spool.EventKinds) == 0 {
		c.Spool.EventKinds = DefaultSpoolEventKinds()
	}
	pki := filepath.Join(c.DataDir, "pki")
	if c.Uplink.Addr == "" {
		c.Uplink.Addr = "127.0.0.1:9471"
	}
	if c.Uplink.CAFile == "" {
		c.Uplink.CAFile = filepath.Join(pki, "ca.crt")
	}
	if c.Uplink.CertFile == "" {
		c.Uplink.CertFile = filepath.Join(pki, "agent.crt")
	}
	if c.Uplink.KeyFile == "" {
		c.Uplink.KeyFile = filepath.Join(pki, "agent.key")
	}
	if c.Uplink.ServerName == "" {
		c.Uplink.ServerName = "localhost"
	}
	return c
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	var errs []error
	if err := c.Sensor.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("sensor: %w", err))
	}
	if err := c.Analytics.Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := api.ParseKinds(c.Spool.EventKinds); err != nil {
		errs = append(errs, fmt.Errorf("spool.eventKinds: %w", err))
	}
	if c.Spool.MaxEventsPerSec < -1 {
		errs = append(errs, fmt.Errorf("spool.maxEventsPerSec %d: must be positive, or -1 for no cap", c.Spool.MaxEventsPerSec))
	}
	if c.Spool.QuotaBytes < 0 {
		errs = append(errs, fmt.Errorf("spool.quotaBytes %d: must not be negative", c.Spool.QuotaBytes))
	}
	if err := c.ExeContent.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Uplink.BandwidthBytesPerSec < 0 {
		errs = append(errs, fmt.Errorf("uplink.bandwidthBytesPerSec %d: must not be negative", c.Uplink.BandwidthBytesPerSec))
	}
	for _, a := range c.Uplink.FallbackAddrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("uplink.fallbackAddrs %q: %w", a, err))
		}
	}
	if c.Uplink.AgentID != "" {
		if err := transport.ValidAgentID(c.Uplink.AgentID); err != nil {
			errs = append(errs, fmt.Errorf("uplink.agentID: %w", err))
		}
	}
	if err := c.Uplink.Enroll.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Kube.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// LoadConfig reads path strictly: unknown fields, wrong types and invalid
// values are errors that name the file and the problem.
func LoadConfig(path string) (Config, error) {
	var cfg Config
	err := confval.LoadYAML(path, &cfg)
	return cfg, err
}
