// Package httpsserve serves the HTTPS endpoints the Kubernetes API server
// calls (the audit and admission webhooks) in one way: a certificate pair
// re-read when it changes on disk, bounded connection timeouts, and a
// graceful shutdown when the context ends.
package httpsserve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// ShutdownGrace is how long requests in flight may take to finish once the
// context ends.
const ShutdownGrace = 5 * time.Second

// Timeouts bound the phases of a connection (http.Server's fields of the
// same names); a zero ReadHeader or Idle takes its default, a zero Read or
// Write means none.
type Timeouts struct {
	ReadHeader, Read, Write, Idle time.Duration
}

const (
	defaultReadHeaderTimeout = 10 * time.Second
	defaultIdleTimeout       = 2 * time.Minute
)

// Serve serves h over TLS (tlsConf, which names the certificate) on l
// until ctx is done, then shuts down gracefully. name labels its errors;
// the server's own complaints (bad handshakes) go to log as warnings.
func Serve(ctx context.Context, name string, l net.Listener, h http.Handler, tlsConf *tls.Config, t Timeouts, log *slog.Logger) error {
	if t.ReadHeader == 0 {
		t.ReadHeader = defaultReadHeaderTimeout
	}
	if t.Idle == 0 {
		t.Idle = defaultIdleTimeout
	}
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	defer stop()
	err := srv.ServeTLS(l, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("%s: %w", name, err)
}

// TLSConfig is the servers' TLS configuration with certificates from
// getCert (CertFiles.GetCertificate); a caller that verifies client
// certificates adds ClientAuth and ClientCAs.
func TLSConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCert}
}
