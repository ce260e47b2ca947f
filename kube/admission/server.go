package admission

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// ValidatePath is where the webhook answers reviews.
const ValidatePath = "/validate"

// certCheckInterval is how often a handshake may stat the certificate
// files for a rotation.
const certCheckInterval = 10 * time.Second

// Server is the guard's HTTPS endpoint: /validate, and /healthz for
// probes.
type Server struct {
	Handler *Handler
	certs   *certReloader
	log     *slog.Logger
}

// NewServer loads the serving certificate and prepares the handler.
// cfg.CertFile and cfg.KeyFile are re-read when they change on disk.
func NewServer(cfg Config, opts Options) (*Server, error) {
	h, err := NewHandler(cfg, opts)
	if err != nil {
		return nil, err
	}
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("kube.admission: certFile and keyFile are required")
	}
	certs := &certReloader{certFile: cfg.CertFile, keyFile: cfg.KeyFile, interval: certCheckInterval, log: h.log}
	if err := certs.load(); err != nil {
		return nil, err
	}
	return &Server{Handler: h, certs: certs, log: h.log}, nil
}

// TLSConfig serves the current certificate; no client certificate is
// asked for (the API server does not present one to webhooks by default).
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.certs.get}
}

// ListenAndServe listens on addr (Config.Addr) until ctx is done.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admission: %w", err)
	}
	return s.Serve(ctx, l)
}

// Serve serves on l until ctx is done.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle(ValidatePath, s.Handler)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         s.TLSConfig(),
		ReadHeaderTimeout: 5 * time.Second,
		// The API server waits at most timeoutSeconds (≤ 10 here).
		ReadTimeout:  15 * time.Second,
		WriteTimeout: 15 * time.Second,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:  func(net.Listener) context.Context { return ctx },
	}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	defer stop()
	err := srv.ServeTLS(l, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("admission webhook: %w", err)
}

// certReloader keeps the serving certificate, re-reading the files when
// their modification time or size changed (checked at most every
// interval, on a handshake). A bad new pair is logged and the old one kept.
type certReloader struct {
	certFile, keyFile string
	interval          time.Duration
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]fileStamp
	checked time.Time
}

type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

// load reads the pair; the caller holds mu or has not shared r yet.
func (r *certReloader) load() error {
	var stamp [2]fileStamp
	for i, p := range []string{r.certFile, r.keyFile} {
		st, err := stampOf(p)
		if err != nil {
			return fmt.Errorf("admission certificate: %w", err)
		}
		stamp[i] = st
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("admission certificate: %w", err)
	}
	r.cert, r.stamp, r.checked = &cert, stamp, time.Now()
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) < r.interval {
		return r.cert, nil
	}
	r.checked = time.Now()
	for i, p := range []string{r.certFile, r.keyFile} {
		st, err := stampOf(p)
		if err != nil || st != r.stamp[i] {
			if err := r.load(); err != nil {
				r.log.Warn("admission: keeping the previous certificate", "error", err)
			} else {
				r.log.Info("admission: serving certificate reloaded", "certFile", r.certFile)
			}
			break
		}
	}
	return r.cert, nil
}
