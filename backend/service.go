package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/harrier-sec/harrier/backend/vulndb"
	"github.com/harrier-sec/harrier/transport"
)

// Config configures the backend service: where it keeps data, where it
// listens, and its identity.
type Config struct {
	// DataDir holds the backend's store.
	DataDir string `json:"dataDir,omitempty"`
	// APIAddr serves the API and web UI (TCP, default 127.0.0.1:9470).
	APIAddr string `json:"apiAddr,omitempty"`
	// IngestAddr receives agents over QUIC (UDP, default 127.0.0.1:9471;
	// a central backend listens on all interfaces, e.g. ":9471").
	IngestAddr string `json:"ingestAddr,omitempty"`
	// Token protects the API; empty means generate one into
	// <TokenDir>/api-token (mode 0600).
	Token    string `json:"token,omitempty"`
	TokenDir string `json:"tokenDir,omitempty"`
	// CAFile pins the CA agents' certificates must chain to; CertFile and
	// KeyFile are the backend's serving identity.
	CAFile   string `json:"caFile,omitempty"`
	CertFile string `json:"certFile,omitempty"`
	KeyFile  string `json:"keyFile,omitempty"`
	// MaxEvents bounds the recent raw events kept for GET /api/v1/events.
	MaxEvents int `json:"maxEvents,omitempty"`
	// MaxPendingInventoryBytes bounds the inventory chunks kept while their
	// snapshot is incomplete (default 256 MiB).
	MaxPendingInventoryBytes int64 `json:"maxPendingInventoryBytes,omitempty"`
	// VulnDB is the offline vulnerability database for the image-vulnerable
	// posture check.
	VulnDB VulnDBConfig `json:"vulnDB"`
}

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
	if c.MaxEvents < 0 {
		errs = append(errs, fmt.Errorf("maxEvents %d: must not be negative", c.MaxEvents))
	}
	if c.MaxPendingInventoryBytes < 0 {
		errs = append(errs, fmt.Errorf("maxPendingInventoryBytes %d: must not be negative", c.MaxPendingInventoryBytes))
	}
	switch c.VulnDB.MinSeverity {
	case "", "low", "medium", "high", "critical":
	default:
		errs = append(errs, fmt.Errorf("vulnDB.minSeverity %q: must be low, medium, high or critical", c.VulnDB.MinSeverity))
	}
	return errors.Join(errs...)
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
	return c
}

// Service is a running backend: store, QUIC ingest and HTTP API.
type Service struct {
	cfg    Config
	log    *slog.Logger
	store  *BadgerStore
	ingest *transport.Server
	http   *http.Server
	api    net.Listener
}

// NewService opens the store and binds both listeners, so that a caller
// knows the backend is reachable once it returns.
func NewService(cfg Config, log *slog.Logger) (*Service, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	token, err := EnsureToken(cfg.TokenDir, cfg.Token, log)
	if err != nil {
		return nil, err
	}
	metrics := NewMetrics()
	vulns := NewImageVulnChecker(cfg.VulnDB.Dir, vulndb.ParseSeverity(cfg.VulnDB.MinSeverity), log)
	st, err := OpenBadgerStoreConfig(BadgerConfig{Dir: cfg.DataDir, MaxEvents: cfg.MaxEvents,
		MaxPendingInventoryBytes: cfg.MaxPendingInventoryBytes, Metrics: metrics, Evaluator: vulns}, log)
	if err != nil {
		return nil, err
	}
	tlsConf, err := transport.ServerTLS(cfg.CertFile, cfg.KeyFile, cfg.CAFile)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("ingest TLS (make certificates with `harrier certs`, or set backend.caFile/certFile/keyFile): %w", err), st.Close())
	}
	ingest, err := transport.NewServer(transport.ServerConfig{Addr: cfg.IngestAddr, TLS: tlsConf}, NewSink(st), log)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("ingest: %w", err), st.Close())
	}
	ln, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("API listen: %w", err), ingest.Close(), st.Close())
	}
	s := &Service{
		cfg: cfg, log: log, store: st, ingest: ingest, api: ln,
		http: &http.Server{
			Handler:           NewAPI(st, APIConfig{Token: token, Metrics: metrics}, log),
			ReadHeaderTimeout: 10 * time.Second,
		},
	}
	return s, nil
}

// IngestAddr is where agents connect (resolved, also when configured as port 0).
func (s *Service) IngestAddr() net.Addr { return s.ingest.Addr() }

// APIAddr is where the API and UI listen.
func (s *Service) APIAddr() net.Addr { return s.api.Addr() }

// Run serves until ctx is done (or a listener fails), then stops ingest,
// shuts the API down and closes the store, in that order. Every goroutine it
// starts has returned when it does.
func (s *Service) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	ingestDone := make(chan struct{})
	g.Go(func() error {
		defer close(ingestDone)
		if err := s.ingest.Serve(ctx); err != nil {
			return fmt.Errorf("ingest: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := s.http.Serve(s.api); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("API: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done() // the caller's, or a failure of either server
		<-ingestDone
		shut, stop := context.WithTimeout(context.Background(), 5*time.Second)
		defer stop()
		return s.http.Shutdown(shut)
	})
	s.log.Info("backend running", "api", "http://"+s.api.Addr().String()+"/", "ingest", s.cfg.IngestAddr)
	return errors.Join(g.Wait(), s.store.Close())
}
