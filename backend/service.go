package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/harrier-sec/harrier/backend/vulndb"
	"github.com/harrier-sec/harrier/transport"
)

// Service is a running backend: store, QUIC ingest and HTTP API.
type Service struct {
	cfg    Config
	log    *slog.Logger
	store  *BadgerStore
	ingest *transport.Server
	http   *http.Server
	api    net.Listener
	// readyAfter, when set, holds /readyz at 503 until it is closed (see
	// ReadyAfter).
	readyAfter <-chan struct{}
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
	s := &Service{cfg: cfg, log: log, store: st, ingest: ingest, api: ln}
	s.http = &http.Server{
		Handler:           NewAPI(st, APIConfig{Token: token, Metrics: metrics, Ready: s.ready}, log),
		ReadHeaderTimeout: 10 * time.Second,
	}
	return s, nil
}

// ReadyAfter makes /readyz answer 503 until ready is closed: a process that
// embeds the backend is ready only when its other parts are. Call it before
// Run.
func (s *Service) ReadyAfter(ready <-chan struct{}) { s.readyAfter = ready }

func (s *Service) ready() error {
	if s.readyAfter == nil {
		return nil
	}
	select {
	case <-s.readyAfter:
		return nil
	default:
		return errors.New("starting: the rest of the process is not ready yet")
	}
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
