package backend

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/backend/export"
	"github.com/harrier-sec/harrier/backend/replicate"
	"github.com/harrier-sec/harrier/internal/confval"
)

// DefaultDataDir holds the backend's store, certificates and API token
// unless its file or --data-dir says otherwise. It is the agent's default
// too, so the all-in-one keeps both under one directory.
const DefaultDataDir = "/var/lib/harrier"

// FileConfig is the file `harrier backend -c` reads: a data directory and
// the backend section, the all-in-one's file without the agent's sections.
type FileConfig struct {
	// DataDir holds what the backend section leaves unset (see
	// Config.InDataDir).
	DataDir string `json:"dataDir,omitempty"`
	Backend Config `json:"backend"`
}

// Validate reports every problem with f at once.
func (f FileConfig) Validate() error {
	if err := f.Backend.Validate(); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	return nil
}

// Resolved is the backend section with the paths it leaves unset under
// DataDir (default DefaultDataDir).
func (f FileConfig) Resolved() Config {
	if f.DataDir == "" {
		f.DataDir = DefaultDataDir
	}
	return f.Backend.InDataDir(f.DataDir)
}

// LoadConfig reads the backend's file at path strictly: unknown fields,
// wrong types and invalid values are errors that name the file and the
// problem.
func LoadConfig(path string) (FileConfig, error) {
	var f FileConfig
	err := confval.LoadYAML(path, &f)
	return f, err
}

// Config configures the backend service: where it keeps data, where it
// listens, and its identity.
type Config struct {
	// DataDir holds the backend's store.
	DataDir string `json:"dataDir,omitempty"`
	// Cluster makes this backend one replica of several over a NATS
	// JetStream stream (backend/replicate); nil: a single backend.
	Cluster *replicate.Config `json:"cluster,omitempty"`
	// APIAddr serves the API and web UI (TCP, default 127.0.0.1:9470).
	APIAddr string `json:"apiAddr,omitempty"`
	// IngestAddr receives agents over QUIC (UDP, default 127.0.0.1:9471;
	// a central backend listens on all interfaces, e.g. ":9471").
	IngestAddr string `json:"ingestAddr,omitempty"`
	// Token protects the API; empty means generate one into
	// <TokenDir>/api-token (mode 0600).
	Token    string `json:"token,omitempty"`
	TokenDir string `json:"tokenDir,omitempty"`
	// ResponseTokenFile holds the response token, the credential that may
	// change response policies and ask agents for actions (default
	// <TokenDir>/response-token, generated when missing). When it can be
	// neither read nor made, the backend runs and refuses those requests.
	ResponseTokenFile string `json:"responseTokenFile,omitempty"`
	// CAFile pins the CA agents' certificates must chain to; CertFile and
	// KeyFile are the backend's serving identity.
	CAFile   string `json:"caFile,omitempty"`
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
	// CAKeyFile is the CA's private key. Set, it turns enrollment on: the
	// backend signs agents' certificate requests (POST /api/v1/enroll and
	// /api/v1/renew). Unset (the default), the key stays off the backend
	// and agents need certificates made by `harrier certs agent`.
	CAKeyFile string `json:"caKeyFile,omitempty"`
	// APITLS serves the API and web UI over HTTPS with CertFile/KeyFile
	// (re-read when they change), and asks clients for an optional
	// certificate from CAFile: that is how an agent renews. Enrollment
	// needs it: tokens and requests must not travel in the clear.
	APITLS bool `json:"apiTLS,omitempty"`
	// APICertFile and APIKeyFile are the site's own certificate for the
	// API and console (HTTPS), when browsers should see one from the
	// site's CA rather than the backend's from `harrier certs`; default
	// CertFile and KeyFile. Re-read when they change.
	APICertFile string `json:"apiCertFile,omitempty"`
	APIKeyFile  string `json:"apiKeyFile,omitempty"`
	// InsecureAPIWithoutTLS waives the rule that an API listening on a
	// non-loopback address needs apiTLS: for a site whose TLS ends at a
	// proxy in front of the backend. Passwords, tokens and session cookies
	// then cross the network between the two in the clear.
	InsecureAPIWithoutTLS bool `json:"insecureAPIWithoutTLS,omitempty"`
	// Enroll tunes enrollment.
	Enroll EnrollConfig `json:"enroll"`
	// MaxEvents bounds the recent raw events kept for GET /api/v1/events.
	MaxEvents int `json:"maxEvents,omitempty"`
	// MaxPendingInventoryBytes bounds the inventory chunks kept while their
	// snapshot is incomplete (default 256 MiB).
	MaxPendingInventoryBytes int64 `json:"maxPendingInventoryBytes,omitempty"`
	// VulnDB is the offline vulnerability database for the image-vulnerable
	// posture check.
	VulnDB VulnDBConfig `json:"vulnDB"`
	// OIDC offers console sign-in with the site's identity provider
	// beside local users (oidc.go); nil: local users only.
	OIDC *OIDCConfig `json:"oidc,omitempty"`
	// Exports sends alerts on to SIEMs, log pipelines, webhooks and files
	// (backend/export), each destination with its own durable cursor.
	Exports []export.Config `json:"exports,omitempty"`
}

// EnrollConfig tunes how agents get their certificates from the backend.
type EnrollConfig struct {
	// CertValidity is the lifetime of the certificates the backend signs
	// (default 24h); agents renew at two thirds of it.
	CertValidity confval.Duration `json:"certValidity,omitempty"`
	// ServiceAccount is the only service account ("namespace/name") whose
	// pod-bound tokens may enroll (default <the backend's own
	// namespace>/harrier-agent, or harrier/harrier-agent outside a pod).
	ServiceAccount string `json:"serviceAccount,omitempty"`
	// Kubeconfig points at the cluster whose API server reviews agents'
	// service-account tokens; empty: the in-cluster configuration when the
	// backend runs in a pod, else service-account enrollment is off.
	Kubeconfig string `json:"kubeconfig,omitempty"`
}

// DefaultCertValidity is EnrollConfig.CertValidity's default.
const DefaultCertValidity = 24 * time.Hour

// VulnDBConfig points at the site's image scan reports.
type VulnDBConfig struct {
	// Dir holds Trivy (`trivy image -f json`) and Grype (`grype -o json`)
	// reports, one image per *.json file, re-read when they change
	// (default <dataDir>/vulndb).
	Dir string `json:"dir,omitempty"`
	// MinSeverity is the lowest severity that makes a finding: low,
	// medium, high (default) or critical.
	MinSeverity string `json:"minSeverity,omitempty"`
}

// Validate reports problems a config file can have.
func (c Config) Validate() error {
	var errs []error
	for _, a := range []struct{ name, addr string }{{"apiAddr", c.APIAddr}, {"ingestAddr", c.IngestAddr}} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", a.name, a.addr, err))
		}
	}
	if err := c.checkAPITLS(); err != nil {
		errs = append(errs, err)
	}
	if c.MaxEvents < 0 {
		errs = append(errs, fmt.Errorf("maxEvents %d: must not be negative", c.MaxEvents))
	}
	if c.Cluster != nil {
		if err := c.Cluster.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.MaxPendingInventoryBytes < 0 {
		errs = append(errs, fmt.Errorf("maxPendingInventoryBytes %d: must not be negative", c.MaxPendingInventoryBytes))
	}
	if c.CAKeyFile != "" && !c.APITLS {
		errs = append(errs, errors.New("caKeyFile turns enrollment on, which needs apiTLS: true (tokens and certificate requests must not travel in the clear, and renewal authenticates with the agent's certificate)"))
	}
	if c.Enroll.CertValidity < 0 {
		errs = append(errs, fmt.Errorf("enroll.certValidity %v: must be positive", c.Enroll.CertValidity.Std()))
	}
	if sa := c.Enroll.ServiceAccount; sa != "" {
		if ns, name, ok := strings.Cut(sa, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			errs = append(errs, fmt.Errorf("enroll.serviceAccount %q: want namespace/name", sa))
		}
	}
	switch c.VulnDB.MinSeverity {
	case "", "low", "medium", "high", "critical":
	default:
		errs = append(errs, fmt.Errorf("vulnDB.minSeverity %q: must be low, medium, high or critical", c.VulnDB.MinSeverity))
	}
	if c.OIDC != nil {
		if err := c.OIDC.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := export.ValidateAll(c.Exports); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkAPITLS: passwords, tokens and session cookies must not cross a
// network in the clear, so an API off loopback needs TLS (or the waiver).
func (c Config) checkAPITLS() error {
	if (c.APICertFile == "") != (c.APIKeyFile == "") {
		return errors.New("apiCertFile and apiKeyFile: set both or neither")
	}
	if c.APICertFile != "" && !c.APITLS {
		return errors.New("apiCertFile is set but apiTLS is not: set apiTLS: true to serve it")
	}
	if c.APITLS || c.InsecureAPIWithoutTLS || c.APIAddr == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(c.APIAddr)
	if err != nil {
		return nil // reported with the address
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		return nil
	}
	return fmt.Errorf("apiAddr %q listens beyond loopback without TLS: set apiTLS: true (with the backend's certificate from `harrier certs backend`, or the site's own in apiCertFile/apiKeyFile), "+
		"or, when TLS ends at a proxy in front of the backend, waive this with insecureAPIWithoutTLS: true", c.APIAddr)
}

func (c Config) withDefaults() Config {
	if c.APIAddr == "" {
		c.APIAddr = "127.0.0.1:9470"
	}
	if c.IngestAddr == "" {
		c.IngestAddr = "127.0.0.1:9471"
	}
	if c.TokenDir == "" {
		c.TokenDir = c.DataDir
	}
	if c.VulnDB.Dir == "" {
		c.VulnDB.Dir = filepath.Join(c.DataDir, "vulndb")
	}
	if c.VulnDB.MinSeverity == "" {
		c.VulnDB.MinSeverity = "high"
	}
	if c.Enroll.CertValidity == 0 {
		c.Enroll.CertValidity = confval.Duration(DefaultCertValidity)
	}
	return c
}

// TokenFile is where the backend keeps its generated API token (when
// Token is not set).
func (c Config) TokenFile() string { return filepath.Join(c.withDefaults().TokenDir, tokenFile) }

// ResponseTokenFile is where the response token is (generated if missing).
func (c Config) ResponseTokenPath() string {
	if c.ResponseTokenFile != "" {
		return c.ResponseTokenFile
	}
	return filepath.Join(c.withDefaults().TokenDir, responseTokenFile)
}

// InDataDir returns c with the paths it leaves unset under dataDir, the
// layout `harrier backend` and the all-in-one share: the store in
// <dataDir>/backend, the CA and the backend's certificate in <dataDir>/pki
// (where `harrier run` makes them), the generated API token in
// <dataDir>/api-token.
func (c Config) InDataDir(dataDir string) Config {
	pki := filepath.Join(dataDir, "pki")
	for _, p := range []struct {
		field *string
		path  string
	}{
		{&c.DataDir, filepath.Join(dataDir, "backend")},
		{&c.CAFile, filepath.Join(pki, "ca.crt")},
		{&c.CertFile, filepath.Join(pki, "backend.crt")},
		{&c.KeyFile, filepath.Join(pki, "backend.key")},
		{&c.TokenDir, dataDir},
	} {
		if *p.field == "" {
			*p.field = p.path
		}
	}
	return c
}
