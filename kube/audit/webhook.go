package audit

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/harrier-sec/harrier/api"
)

// DefaultMaxBodyBytes bounds one webhook request (the API server's
// batches are far smaller with its default batch size).
const DefaultMaxBodyBytes = 16 << 20

// Stats counts what a receiver or tailer saw.
type Stats struct {
	Events   uint64 // audit events passed on
	Rejected uint64 // requests or lines that were not valid audit events
	Dropped  uint64 // events lost because the consumer was gone
}

type counters struct{ events, rejected, dropped atomic.Uint64 }

func (c *counters) stats() Stats {
	return Stats{Events: c.events.Load(), Rejected: c.rejected.Load(), Dropped: c.dropped.Load()}
}

// Receiver is the audit webhook: an HTTPS endpoint the API server posts
// EventLists to (its --audit-webhook-config-file names it), authenticated
// by a client certificate from ClientCAs. Every accepted event is sent on
// Out; the receiver blocks (and so back-pressures the API server's
// batching) while Out is full.
type Receiver struct {
	Decoder Decoder
	Out     chan<- *api.Event
	// MaxBodyBytes bounds a request (default DefaultMaxBodyBytes).
	MaxBodyBytes int64
	Log          *slog.Logger
	n            counters
}

// Stats returns the receiver's counters.
func (r *Receiver) Stats() Stats { return r.n.stats() }

// ServeHTTP implements http.Handler.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST an audit.k8s.io/v1 EventList", http.StatusMethodNotAllowed)
		return
	}
	max := r.MaxBodyBytes
	if max <= 0 {
		max = DefaultMaxBodyBytes
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, max))
	if err != nil {
		r.n.rejected.Add(1)
		code := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			code = http.StatusRequestEntityTooLarge
		}
		r.Log.Warn("audit webhook: bad request body", "remote", req.RemoteAddr, "error", err)
		http.Error(w, "bad body", code)
		return
	}
	events, err := r.Decoder.DecodeList(body)
	if err != nil {
		r.n.rejected.Add(1)
		r.Log.Warn("audit webhook: not an audit event list", "remote", req.RemoteAddr, "error", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, ev := range events {
		select {
		case r.Out <- ev:
			r.n.events.Add(1)
		case <-req.Context().Done():
			r.n.dropped.Add(uint64(len(events)))
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}

// ServerTLS is the receiver's TLS configuration: its own certificate, and
// client certificates required and verified against clientCAs.
func ServerTLS(cert tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs,
	}
}

// Serve serves r on l with tlsConf until ctx is done.
func (r *Receiver) Serve(ctx context.Context, l net.Listener, tlsConf *tls.Config) error {
	srv := &http.Server{
		Handler:           r,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(r.Log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
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
	return fmt.Errorf("audit webhook: %w", err)
}
