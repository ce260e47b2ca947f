package httpsserve

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// CertCheckInterval is how often a handshake may stat the certificate
// files for a rotation.
const CertCheckInterval = 10 * time.Second

// CertFiles keeps a serving certificate, re-reading the files when their
// modification time or size changed (checked at most every CheckInterval,
// on a handshake), so a rotated certificate is served without a restart.
// A bad new pair is logged and the old one kept.
type CertFiles struct {
	certFile, keyFile string
	// CheckInterval is CertCheckInterval unless changed before serving.
	CheckInterval time.Duration
	log           *slog.Logger

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

// LoadCertFiles reads the pair once, so that a bad one is an error at
// start; rotations are logged to log.
func LoadCertFiles(certFile, keyFile string, log *slog.Logger) (*CertFiles, error) {
	c := &CertFiles{certFile: certFile, keyFile: keyFile, CheckInterval: CertCheckInterval, log: log}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// load reads the pair; the caller holds mu or has not shared c yet.
func (c *CertFiles) load() error {
	var stamp [2]fileStamp
	for i, p := range []string{c.certFile, c.keyFile} {
		st, err := stampOf(p)
		if err != nil {
			return fmt.Errorf("certificate: %w", err)
		}
		stamp[i] = st
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	c.cert, c.stamp, c.checked = &cert, stamp, time.Now()
	return nil
}

// GetCertificate is tls.Config's GetCertificate.
func (c *CertFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.checked) < c.CheckInterval {
		return c.cert, nil
	}
	c.checked = time.Now()
	for i, p := range []string{c.certFile, c.keyFile} {
		st, err := stampOf(p)
		if err != nil || st != c.stamp[i] {
			if err := c.load(); err != nil {
				c.log.Warn("keeping the previous certificate", "certFile", c.certFile, "error", err)
			} else {
				c.log.Info("certificate reloaded", "certFile", c.certFile)
			}
			break
		}
	}
	return c.cert, nil
}

// GetClientCertificate is tls.Config's GetClientCertificate: the same
// re-read pair presented as a client certificate (the agent's uplink, whose
// certificate is renewed on disk).
func (c *CertFiles) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return c.GetCertificate(nil)
}

// Reload re-reads the pair now, for a writer that has just replaced it and
// must not wait for CheckInterval. On error the previous pair is kept.
func (c *CertFiles) Reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.load()
}

// Leaf is the parsed certificate in use.
func (c *CertFiles) Leaf() *x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cert.Leaf
}
