package audit

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/httpsserve"
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
// by a client certificate (see ServerTLS) and/or a bearer token. Every
// accepted event is sent on Out; the receiver blocks (and so
// back-pressures the API server's batching) while Out is full.
type Receiver struct {
	Decoder Decoder
	Out     chan<- *api.Event
	// MaxBodyBytes bounds a request (default DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// Token, when set, is the bearer token the API server presents (the
	// `token`/`tokenFile` of the webhook kubeconfig's user). A request
	// with a verified client certificate needs no token.
	Token *TokenFile
	Log   *slog.Logger
	n     counters
}

// TokenFile is a bearer token read from a file and re-read when the file
// changes, so a token can be rotated without a restart.
type TokenFile struct {
	Path    string
	mu      sync.Mutex
	modTime time.Time
	size    int64
	token   []byte
}

// Load reads the token; callers check it once at start for a clear error.
func (f *TokenFile) Load() ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := os.Stat(f.Path)
	if err != nil {
		return nil, fmt.Errorf("audit webhook token: %w", err)
	}
	if f.token != nil && st.ModTime().Equal(f.modTime) && st.Size() == f.size {
		return f.token, nil
	}
	raw, err := os.ReadFile(f.Path)
	if err != nil {
		return nil, fmt.Errorf("audit webhook token: %w", err)
	}
	tok := bytes.TrimSpace(raw)
	if len(tok) == 0 {
		return nil, fmt.Errorf("audit webhook token: %s is empty", f.Path)
	}
	f.token, f.modTime, f.size = tok, st.ModTime(), st.Size()
	return tok, nil
}

// authorized says whether req comes from the API server: a verified client
// certificate (the TLS layer checked it against the client CA) or the
// bearer token.
func (r *Receiver) authorized(req *http.Request) (bool, string) {
	if req.TLS != nil && len(req.TLS.VerifiedChains) > 0 {
		return true, ""
	}
	if r.Token == nil {
		return false, "no verified client certificate"
	}
	want, err := r.Token.Load()
	if err != nil {
		r.Log.Error("audit webhook: cannot check the bearer token", "error", err)
		return false, "token unavailable"
	}
	got, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false, "no bearer token"
	}
	if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) != 1 {
		return false, "wrong bearer token"
	}
	return true, ""
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
	if ok, why := r.authorized(req); !ok {
		r.n.rejected.Add(1)
		r.Log.Warn("audit webhook: unauthenticated request", "remote", req.RemoteAddr, "reason", why)
		http.Error(w, "unauthorized: "+why, http.StatusUnauthorized)
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

// ServerTLS is the receiver's TLS configuration: its own certificate
// (from getCert, such as httpsserve.CertFiles.GetCertificate) and, with
// clientCAs, client certificates verified against them — required when
// there is no bearer token to fall back on (tokenAuth false), checked when
// given otherwise.
func ServerTLS(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), clientCAs *x509.CertPool, tokenAuth bool) *tls.Config {
	c := httpsserve.TLSConfig(getCert)
	switch {
	case clientCAs != nil && tokenAuth:
		c.ClientAuth, c.ClientCAs = tls.VerifyClientCertIfGiven, clientCAs
	case clientCAs != nil:
		c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, clientCAs
	}
	return c
}

// Serve serves r on l with tlsConf until ctx is done.
func (r *Receiver) Serve(ctx context.Context, l net.Listener, tlsConf *tls.Config) error {
	return httpsserve.Serve(ctx, "audit webhook", l, r, tlsConf, httpsserve.Timeouts{Read: time.Minute}, r.Log)
}
