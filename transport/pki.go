// Package transport carries spooled records from an agent to the backend over
// QUIC with mutual TLS: the PKI helpers behind `harrier certs`, the TLS
// configuration, the length-prefixed zstd/protobuf framing, the backend's
// ingest Server and the agent's uplink Client. See README.md for the protocol.
package transport

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

const (
	// agentURIScheme and agentURIHost form the URI SAN "harrier://agent/<id>"
	// that names an agent next to its CommonName.
	agentURIScheme = "harrier"
	agentURIHost   = "agent"

	// clockSkew backdates NotBefore so a node whose clock runs a little behind
	// the CA's still accepts a freshly issued certificate.
	clockSkew = 5 * time.Minute

	maxAgentIDLen = 128
)

// NewCA makes a self-signed ECDSA P-256 certificate authority for sites
// without a PKI. It returns PEM-encoded certificate and PKCS#8 private key.
func NewCA(commonName string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if commonName == "" {
		return nil, nil, errors.New("CA common name is empty")
	}
	tmpl, err := baseTemplate(commonName, validity)
	if err != nil {
		return nil, nil, err
	}
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	// A CA made here signs only leaf certificates.
	tmpl.MaxPathLenZero = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	return sign(tmpl, tmpl, &key.PublicKey, key, key)
}

// IssueServer issues a backend certificate for the given DNS names and IP
// addresses (at least one), signed by the CA.
func IssueServer(caCertPEM, caKeyPEM []byte, hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		return nil, nil, errors.New("server certificate needs at least one DNS name or IP address")
	}
	tmpl, err := baseTemplate(hosts[0], validity)
	if err != nil {
		return nil, nil, err
	}
	for _, h := range hosts {
		if h == "" {
			return nil, nil, errors.New("empty host name")
		}
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	return issue(caCertPEM, caKeyPEM, tmpl)
}

// IssueAgent issues an agent's client certificate. The agent's identity is
// the CommonName and, redundantly, the URI SAN harrier://agent/<agentID>.
func IssueAgent(caCertPEM, caKeyPEM []byte, agentID string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if err := validAgentID(agentID); err != nil {
		return nil, nil, err
	}
	tmpl, err := baseTemplate(agentID, validity)
	if err != nil {
		return nil, nil, err
	}
	tmpl.URIs = []*url.URL{agentURI(agentID)}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return issue(caCertPEM, caKeyPEM, tmpl)
}

// WriteFiles writes dir/name.crt (0644) and, when keyPEM is not empty,
// dir/name.key (0600). Each file is written to a temporary file and renamed,
// so a reader never sees half a key and the key is never world-readable.
func WriteFiles(dir, name string, certPEM, keyPEM []byte) error {
	if name == "" || name != filepath.Base(name) {
		return fmt.Errorf("invalid file name %q", name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := writeFileAtomic(filepath.Join(dir, name+".crt"), certPEM, 0o644); err != nil {
		return err
	}
	if len(keyPEM) == 0 {
		return nil
	}
	return writeFileAtomic(filepath.Join(dir, name+".key"), keyPEM, 0o600)
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory, synced and renamed: a reader (or a crash) sees the old file or
// the new one, never half of one, and a key is never readable by others.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	return writeFileAtomic(path, data, mode)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	// CreateTemp makes the file 0600, so the key is private from its first byte.
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	ok = true
	return nil
}

func baseTemplate(commonName string, validity time.Duration) (*x509.Certificate, error) {
	if validity <= 0 {
		return nil, fmt.Errorf("validity %v must be positive", validity)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"Harrier"}},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(validity),
	}, nil
}

func issue(caCertPEM, caKeyPEM []byte, tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	caCert, caKey, err := loadCA(caCertPEM, caKeyPEM)
	if err != nil {
		return nil, nil, err
	}
	// A leaf must not outlive the CA that vouches for it.
	if tmpl.NotAfter.After(caCert.NotAfter) {
		tmpl.NotAfter = caCert.NotAfter
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	return sign(tmpl, caCert, &key.PublicKey, key, caKey)
}

// loadCA parses a CA pair and checks that the key is the certificate's.
func loadCA(caCertPEM, caKeyPEM []byte) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	caCert, err := parseCertPEM(caCertPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !caCert.IsCA {
		return nil, nil, errors.New("CA certificate is not a CA")
	}
	caKey, err := parseKeyPEM(caKeyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("CA key: %w", err)
	}
	if !caKey.PublicKey.Equal(caCert.PublicKey) {
		return nil, nil, errors.New("CA key does not match the CA certificate")
	}
	return caCert, caKey, nil
}

// maxCSRBytes bounds a PEM CSR from the network; an ECDSA P-256 request is
// about 500 bytes.
const maxCSRBytes = 16 << 10

// NewAgentCSR makes an agent's private key (ECDSA P-256, PKCS#8 PEM) and a
// certificate request for agentID, for enrollment: the key stays with the
// agent, only the request travels. The signer decides the identity; the
// request's names are a hint.
func NewAgentCSR(agentID string) (csrPEM, keyPEM []byte, err error) {
	if agentID != "" {
		if err := validAgentID(agentID); err != nil {
			return nil, nil, err
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: agentID, Organization: []string{"Harrier"}}}
	if agentID != "" {
		tmpl.URIs = []*url.URL{agentURI(agentID)}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate request: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// ParseCSR decodes a PEM certificate request from an untrusted peer and
// checks its self-signature, so that the requester holds the key. Only
// ECDSA P-256 keys are accepted: what NewAgentCSR makes, and nothing the
// transport's TLS 1.3 setup would have to think about.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	if len(csrPEM) > maxCSRBytes {
		return nil, fmt.Errorf("certificate request is larger than %d bytes", maxCSRBytes)
	}
	block, rest := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("no PEM CERTIFICATE REQUEST block")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("data after the certificate request")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature: %w", err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, errors.New("certificate request key must be ECDSA P-256")
	}
	return csr, nil
}

// SignAgentCSR issues an agent's client certificate for the key in csrPEM,
// naming agentID (the signer's decision: the names in the request are
// ignored) with the same profile as IssueAgent: CommonName and URI SAN
// harrier://agent/<id>, client authentication only. It is what the
// backend's enrollment and renewal use.
func SignAgentCSR(caCertPEM, caKeyPEM, csrPEM []byte, agentID string, validity time.Duration) (certPEM []byte, err error) {
	if err := validAgentID(agentID); err != nil {
		return nil, err
	}
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	caCert, caKey, err := loadCA(caCertPEM, caKeyPEM)
	if err != nil {
		return nil, err
	}
	tmpl, err := baseTemplate(agentID, validity)
	if err != nil {
		return nil, err
	}
	// Short-lived certificates are renewed at two thirds of their life:
	// backdating by the full skew allowance would eat that margin, so
	// backdate by at most a tenth of the validity.
	tmpl.NotBefore = tmpl.NotAfter.Add(-validity).Add(-min(clockSkew, validity/10))
	if tmpl.NotAfter.After(caCert.NotAfter) {
		tmpl.NotAfter = caCert.NotAfter
	}
	tmpl.URIs = []*url.URL{agentURI(agentID)}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, csr.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, key, signer *ecdsa.PrivateKey) (certPEM, keyPEM []byte, err error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return x509.ParseCertificate(block.Bytes)
}

func parseKeyPEM(b []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("key is %T, want ECDSA", k)
		}
		return ec, nil
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
	}
}

func agentURI(id string) *url.URL {
	return &url.URL{Scheme: agentURIScheme, Host: agentURIHost, Path: "/" + id}
}

// validAgentID keeps IDs to a conservative alphabet: they end up in URIs,
// file names, log lines and backend keys.
func validAgentID(id string) error {
	if id == "" {
		return errors.New("agent ID is empty")
	}
	if len(id) > maxAgentIDLen {
		return fmt.Errorf("agent ID is longer than %d bytes", maxAgentIDLen)
	}
	for _, r := range id {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return fmt.Errorf("agent ID %q: only letters, digits, '-', '_' and '.' are allowed", id)
		}
	}
	return nil
}

// ValidSpoolID accepts what a spool's ID can be: empty (a spool older than
// spool IDs) or 32 lowercase hex digits. The backend puts it in keys.
func ValidSpoolID(id string) error {
	if id == "" {
		return nil
	}
	if len(id) != 32 {
		return fmt.Errorf("spool_id %q: want 32 hex digits", id)
	}
	for _, r := range id {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return fmt.Errorf("spool_id %q: want 32 hex digits", id)
		}
	}
	return nil
}
