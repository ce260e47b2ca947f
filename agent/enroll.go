package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/harrier-sec/harrier/transport"
)

// Enrollment credential kinds (uplink.enroll.kind); the backend's names.
const (
	EnrollServiceAccount = "serviceAccount"
	EnrollBootstrap      = "bootstrap"
)

// EnrollConfig is uplink.enroll: where and with what the agent gets its
// certificate when it has none (or only an expired one), like a kubelet's
// TLS bootstrap. Off while Server is empty.
type EnrollConfig struct {
	// Server is the backend's API (https://host:9470).
	Server string `json:"server,omitempty"`
	// TokenFile holds the credential, read afresh on every attempt: the
	// pod's projected service-account token (audience harrier; the
	// kubelet rotates it) or a bootstrap token from `harrier tokens
	// create`.
	TokenFile string `json:"tokenFile,omitempty"`
	// Kind is serviceAccount (the agent ID is the pod's node, as the API
	// server says) or bootstrap (the agent asks for uplink.agentID, or the
	// node name).
	Kind string `json:"kind,omitempty"`
}

// Enabled reports whether the agent enrolls.
func (c EnrollConfig) Enabled() bool { return c.Server != "" }

// Validate reports every problem with c at once.
func (c EnrollConfig) Validate() error {
	if !c.Enabled() {
		if c.TokenFile != "" || c.Kind != "" {
			return errors.New("uplink.enroll: server is required when tokenFile or kind is set")
		}
		return nil
	}
	var errs []error
	if u, err := url.Parse(c.Server); err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, fmt.Errorf("uplink.enroll.server %q: want https://host:port", c.Server))
	}
	if c.TokenFile == "" {
		errs = append(errs, errors.New("uplink.enroll.tokenFile is required"))
	}
	switch c.Kind {
	case EnrollServiceAccount, EnrollBootstrap:
	default:
		errs = append(errs, fmt.Errorf("uplink.enroll.kind %q: want %s or %s", c.Kind, EnrollServiceAccount, EnrollBootstrap))
	}
	return errors.Join(errs...)
}

// Enrollment retry bounds.
const (
	enrollBackoffMin = time.Second
	enrollBackoffMax = 5 * time.Minute
	enrollTimeout    = 30 * time.Second
	maxResponseBytes = 64 << 10
)

// Enroller gets and renews the agent's certificate from the backend: it
// makes a key (which never leaves the node), sends a certificate request
// with its credential to POST /api/v1/enroll, writes the key (0600) and the
// certificate atomically, and renews at two thirds of the certificate's
// lifetime through POST /api/v1/renew, authenticated by the current
// certificate.
type Enroller struct {
	cfg                       EnrollConfig
	certFile, keyFile, caFile string
	// requestID is the agent ID a bootstrap enrollment asks for.
	requestID string
	// pinned is uplink.agentID: a certificate naming another ID is an
	// error, not a retry.
	pinned string
	log    *slog.Logger
	roots  *x509.CertPool
	http   *http.Client
	// BackoffMin and BackoffMax bound retries (tests shorten them).
	BackoffMin, BackoffMax time.Duration
}

// NewEnroller prepares enrollment for the uplink section up (with defaults
// filled in) of an agent on node.
func NewEnroller(up UplinkConfig, node string, log *slog.Logger) (*Enroller, error) {
	if err := up.Enroll.Validate(); err != nil {
		return nil, err
	}
	roots, err := transport.LoadCAPool(up.CAFile)
	if err != nil {
		return nil, fmt.Errorf("uplink.caFile (the CA the backend's API certificate chains to): %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Enroller{cfg: up.Enroll, certFile: up.CertFile, keyFile: up.KeyFile, caFile: up.CAFile,
		requestID: cmpOr(up.AgentID, node), pinned: up.AgentID, roots: roots,
		log: log.With("server", up.Enroll.Server, "kind", up.Enroll.Kind), BackoffMin: enrollBackoffMin, BackoffMax: enrollBackoffMax}
	e.http = &http.Client{Timeout: enrollTimeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12,
			// Renewal presents the current certificate, read at each
			// handshake: it changes under a long-lived client.
			GetClientCertificate: e.clientCert},
		// One request every few hours: no pool to keep.
		DisableKeepAlives: true,
	}}
	return e, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// clientCert presents the certificate on disk when it is usable, or none
// (enrollment needs none). One from another CA or expired (a node whose
// site made a new CA, a disk that outlived its agent) would fail the
// handshake before the backend could say anything, so it is not shown.
func (e *Enroller) clientCert(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if _, err := e.Current(); err != nil {
		return &tls.Certificate{}, nil
	}
	c, err := tls.LoadX509KeyPair(e.certFile, e.keyFile)
	if err != nil {
		return &tls.Certificate{}, nil
	}
	return &c, nil
}

// Current returns the certificate on disk when it is usable: its key
// matches, it chains to the CA for client authentication and is valid now.
// The error says why not.
func (e *Enroller) Current() (*x509.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(e.certFile, e.keyFile)
	if err != nil {
		return nil, err
	}
	leaf := pair.Leaf
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: e.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("certificate %s: %w", e.certFile, err)
	}
	return leaf, nil
}

// Ensure returns once a usable certificate is on disk: the one there, or
// one it enrolls for, retrying with backoff until ctx ends. A certificate
// naming another agent than uplink.agentID is an error at once.
func (e *Enroller) Ensure(ctx context.Context) error {
	if leaf, err := e.Current(); err == nil {
		return e.checkPinned(leaf)
	} else if !errors.Is(err, os.ErrNotExist) {
		e.log.Info("certificate not usable; enrolling", "certFile", e.certFile, "reason", err)
	} else {
		e.log.Info("no certificate yet; enrolling", "certFile", e.certFile)
	}
	return e.retry(ctx, "enrollment", func() error { return e.enroll(ctx) })
}

func (e *Enroller) checkPinned(leaf *x509.Certificate) error {
	id, err := transport.CertAgentID(leaf)
	if err != nil {
		return err
	}
	return checkAgentID(e.pinned, id, e.certFile)
}

// checkAgentID is the identity rule: the certificate names the agent;
// uplink.agentID, when set, must agree.
func checkAgentID(pinned, certID, certFile string) error {
	if pinned != "" && pinned != certID {
		return fmt.Errorf("uplink.agentID is %q but the certificate %s names agent %q: the certificate is the agent's identity, so remove uplink.agentID or give this agent a certificate for %q",
			pinned, certFile, certID, pinned)
	}
	return nil
}

// retry runs f until it succeeds or ctx ends, with exponential backoff;
// errPinned ends it at once.
func (e *Enroller) retry(ctx context.Context, what string, f func() error) error {
	delay := e.BackoffMin
	for {
		err := f()
		if err == nil {
			return nil
		}
		if errors.Is(err, errPinned) {
			return err
		}
		// Full jitter, so a fleet restarted at once does not come back at
		// once.
		d := time.Duration(rand.Int64N(int64(delay))) + e.BackoffMin/2
		e.log.Warn(what+" failed; the sensor keeps running and the spool keeps filling", "error", err, "retryIn", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
		delay = min(2*delay, e.BackoffMax)
	}
}

// errPinned marks an enrolled certificate that contradicts uplink.agentID.
var errPinned = errors.New("agent ID mismatch")

func (e *Enroller) enroll(ctx context.Context) error {
	tok, err := os.ReadFile(e.cfg.TokenFile)
	if err != nil {
		return fmt.Errorf("read uplink.enroll.tokenFile: %w", err)
	}
	csr, key, err := transport.NewAgentCSR(e.requestID)
	if err != nil {
		return err
	}
	body := map[string]string{"kind": e.cfg.Kind, "token": strings.TrimSpace(string(tok)), "csr": string(csr)}
	// A bootstrap token names no one, so the agent asks for its ID; with a
	// service-account token the API server names the node, and a pinned
	// uplink.agentID is checked against the certificate that comes back.
	if e.cfg.Kind == EnrollBootstrap {
		body["agent_id"] = e.requestID
	}
	return e.request(ctx, "/api/v1/enroll", body, key)
}

// Renew asks for a new certificate with the current one.
func (e *Enroller) Renew(ctx context.Context) error {
	csr, key, err := transport.NewAgentCSR(e.requestID)
	if err != nil {
		return err
	}
	return e.request(ctx, "/api/v1/renew", map[string]string{"csr": string(csr)}, key)
}

func (e *Enroller) request(ctx context.Context, path string, body map[string]string, key []byte) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	url := strings.TrimSuffix(e.cfg.Server, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.http.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("POST %s: read answer: %w", url, err)
	}
	var out struct {
		AgentID     string `json:"agent_id"`
		Certificate string `json:"certificate"`
		Error       string `json:"error"`
	}
	_ = json.Unmarshal(raw, &out)
	if resp.StatusCode != http.StatusOK {
		msg := out.Error
		if msg == "" {
			msg = strings.TrimSpace(string(raw))
		}
		return fmt.Errorf("POST %s: %s: %s", url, resp.Status, msg)
	}
	cert, err := tls.X509KeyPair([]byte(out.Certificate), key)
	if err != nil {
		return fmt.Errorf("POST %s: certificate in the answer: %w", url, err)
	}
	id, err := transport.CertAgentID(cert.Leaf)
	if err != nil {
		return fmt.Errorf("POST %s: %w", url, err)
	}
	if err := checkAgentID(e.pinned, id, "the backend issued"); err != nil {
		// Not retried: the configuration, not the backend, must change.
		return fmt.Errorf("%w: %w", errPinned, err)
	}
	// A fresh node has the data directory (the chart's hostPath) but not
	// its pki/ yet.
	for _, f := range []string{e.keyFile, e.certFile} {
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			return fmt.Errorf("certificate directory: %w", err)
		}
	}
	// The key first: a crash between the two writes leaves a pair that does
	// not match, which the next start treats as no certificate and enrolls.
	if err := transport.WriteFileAtomic(e.keyFile, key, 0o600); err != nil {
		return err
	}
	if err := transport.WriteFileAtomic(e.certFile, []byte(out.Certificate), 0o644); err != nil {
		return err
	}
	e.log.Info("certificate issued", "path", path, "agent", id, "notAfter", cert.Leaf.NotAfter, "certFile", e.certFile)
	return nil
}

// RenewAt is when a certificate is renewed: at two thirds of its lifetime.
func RenewAt(leaf *x509.Certificate) time.Time {
	return leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3)
}

// Run renews the certificate before it expires, for as long as ctx lasts,
// and calls reload after each new certificate is written (the uplink's
// certificate holder). A failed renewal is retried with backoff; once the
// certificate has expired, the agent enrolls again with its credential.
func (e *Enroller) Run(ctx context.Context, reload func() error) error {
	for {
		leaf, err := e.Current()
		if err != nil {
			if err := e.Ensure(ctx); err != nil {
				return err
			}
			if err := reload(); err != nil {
				return fmt.Errorf("load enrolled certificate: %w", err)
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(RenewAt(leaf))):
		}
		err = e.retry(ctx, "certificate renewal", func() error {
			if time.Now().After(leaf.NotAfter) {
				return nil // expired: enroll again above
			}
			return e.Renew(ctx)
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := reload(); err != nil {
			e.log.Warn("renewed certificate not loaded; keeping the previous one", "error", err)
		}
	}
}
