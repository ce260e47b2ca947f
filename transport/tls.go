package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// ALPN is the application protocol both ends require. The version suffix
// lets a future wire change be refused at the handshake instead of parsed
// wrongly.
const ALPN = "harrier/1"

// sessionCacheSize bounds the client's TLS session cache; an agent talks to
// one backend, so a few tickets suffice for 0-RTT resumption.
const sessionCacheSize = 8

// ServerTLS loads the backend's certificate and key and pins caFile as the
// only authority for client certificates, which are required and verified.
func ServerTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load server key pair: %w", err)
	}
	pool, err := loadCAPool(caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{ALPN},
	}, nil
}

// ClientTLS loads the agent's certificate and key and trusts only caFile for
// the backend's certificate. serverName must be one of the names or IPs the
// backend certificate was issued for. A session cache is set so reconnects
// can resume with 0-RTT.
func ClientTLS(certFile, keyFile, caFile, serverName string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load agent key pair: %w", err)
	}
	c, err := ClientTLSWith(nil, caFile, serverName)
	if err != nil {
		return nil, err
	}
	c.Certificates = []tls.Certificate{cert}
	return c, nil
}

// ClientTLSWith is ClientTLS with the client certificate from getCert,
// asked on every handshake: a certificate renewed on disk (see
// httpsserve.CertFiles.GetClientCertificate) is used from the next
// connection on, without a restart.
func ClientTLSWith(getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error), caFile, serverName string) (*tls.Config, error) {
	pool, err := loadCAPool(caFile)
	if err != nil {
		return nil, err
	}
	if serverName == "" {
		return nil, errors.New("server name is empty")
	}
	return &tls.Config{
		GetClientCertificate: getCert,
		RootCAs:              pool,
		ServerName:           serverName,
		MinVersion:           tls.VersionTLS13,
		NextProtos:           []string{ALPN},
		ClientSessionCache:   tls.NewLRUClientSessionCache(sessionCacheSize),
	}, nil
}

// LoadCAPool reads a PEM bundle of CA certificates.
func LoadCAPool(caFile string) (*x509.CertPool, error) { return loadCAPool(caFile) }

func loadCAPool(caFile string) (*x509.CertPool, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("no certificate in CA file %s", caFile)
	}
	return pool, nil
}

// AgentID returns the agent ID of the verified peer certificate (see
// CertAgentID). Unverified certificates are refused.
func AgentID(state tls.ConnectionState) (string, error) {
	if len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return "", errors.New("peer certificate was not verified")
	}
	return CertAgentID(state.VerifiedChains[0][0])
}

// CertAgentID returns the agent ID a certificate names: the
// harrier://agent/<id> URI SAN, or the CommonName when the certificate has
// no such URI (a site PKI may not add it). When both are present they must
// agree. It does not verify the certificate: AgentID is the check for a
// peer; an agent uses this on its own certificate.
func CertAgentID(leaf *x509.Certificate) (string, error) {
	cn := leaf.Subject.CommonName
	id := ""
	for _, u := range leaf.URIs {
		if u.Scheme != agentURIScheme || u.Host != agentURIHost {
			continue
		}
		uid := strings.TrimPrefix(u.Path, "/")
		if id != "" && uid != id {
			return "", errors.New("certificate names more than one agent")
		}
		id = uid
	}
	if id == "" {
		id = cn
	} else if cn != "" && cn != id {
		return "", fmt.Errorf("certificate CommonName %q differs from its agent URI %q", cn, id)
	}
	if err := validAgentID(id); err != nil {
		return "", fmt.Errorf("certificate: %w", err)
	}
	return id, nil
}

// CertFileAgentID reads the first certificate of a PEM file and returns it
// with the agent ID it names.
func CertFileAgentID(certFile string) (string, *x509.Certificate, error) {
	b, err := os.ReadFile(certFile)
	if err != nil {
		return "", nil, err
	}
	cert, err := parseCertPEM(b)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", certFile, err)
	}
	id, err := CertAgentID(cert)
	if err != nil {
		return "", nil, fmt.Errorf("%s: %w", certFile, err)
	}
	return id, cert, nil
}

// ValidAgentID reports whether id may name an agent (letters, digits, '-',
// '_' and '.', at most 128 bytes): the backend checks requested IDs with it.
func ValidAgentID(id string) error { return validAgentID(id) }
