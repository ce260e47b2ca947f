package admission

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/harrier-sec/harrier/internal/httpsserve"
)

// ValidatePath is where the webhook answers reviews.
const ValidatePath = "/validate"

// Server is the guard's HTTPS endpoint: /validate, and /healthz for
// probes.
type Server struct {
	Handler *Handler
	certs   *httpsserve.CertFiles
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
	certs, err := httpsserve.LoadCertFiles(cfg.CertFile, cfg.KeyFile, h.log)
	if err != nil {
		return nil, fmt.Errorf("admission: %w", err)
	}
	return &Server{Handler: h, certs: certs, log: h.log}, nil
}

// TLSConfig serves the current certificate; no client certificate is
// asked for (the API server does not present one to webhooks by default).
func (s *Server) TLSConfig() *tls.Config {
	return httpsserve.TLSConfig(s.certs.GetCertificate)
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
	// The API server waits at most timeoutSeconds (≤ 10 here).
	t := httpsserve.Timeouts{ReadHeader: 5 * time.Second, Read: 15 * time.Second, Write: 15 * time.Second}
	return httpsserve.Serve(ctx, "admission webhook", l, mux, s.TLSConfig(), t, s.log)
}
