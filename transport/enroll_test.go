package transport

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/internal/testenv"
)

func TestSignAgentCSR(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, "site")
	csr, key, err := NewAgentCSR("hint-name")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(key), "PRIVATE KEY") {
		t.Fatalf("key PEM %q", key)
	}
	// The signer decides the identity: the request's hint is ignored.
	certPEM, err := SignAgentCSR(pki.caCert, pki.caKey, csr, "node-a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	id, err := CertAgentID(cert)
	if err != nil || id != "node-a" {
		t.Fatalf("CertAgentID = %q, %v; want node-a", id, err)
	}
	if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || cert.IsCA {
		t.Fatalf("ext key usage %v, CA %v: want client auth only", cert.ExtKeyUsage, cert.IsCA)
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life > time.Minute+7*time.Second || life < time.Minute {
		t.Fatalf("lifetime %v: want about a minute (backdated by a tenth at most)", life)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pki.caCert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("verify: %v", err)
	}

	tests := []struct {
		name, id string
		csr      []byte
		wantErr  string
	}{
		{"bad id", "no/slash", csr, "only letters"},
		{"not PEM", "node-a", []byte("hello"), "no PEM CERTIFICATE REQUEST"},
		{"a certificate, not a request", "node-a", pki.caCert, "no PEM CERTIFICATE REQUEST"},
		{"trailing data", "node-a", append(append([]byte{}, csr...), "junk"...), "data after"},
		{"tampered signature", "node-a", tamper(t, csr), "certificate request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := SignAgentCSR(pki.caCert, pki.caKey, tc.csr, tc.id, time.Minute)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// tamper flips a bit in the request's DER (inside the subject), which
// breaks either the parse or the self-signature.
func tamper(t *testing.T, csrPEM []byte) []byte {
	t.Helper()
	csr, err := ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	der := append([]byte{}, csr.Raw...)
	i := strings.Index(string(der), "hint-name")
	der[i] ^= 0x01
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// TestAuthorizeAndDisconnect: a refused agent's handshake is closed with
// CodeForbidden and its reason, Disconnect closes a live connection at once,
// and nothing is released from the agent's source meanwhile.
func TestAuthorizeAndDisconnect(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, "site")
	var mu sync.Mutex
	revoked := map[string]bool{}
	authorize := func(id string) error {
		mu.Lock()
		defer mu.Unlock()
		if revoked[id] {
			return errors.New("agent " + id + " is revoked")
		}
		return nil
	}
	sink := newMemSink()
	srv, _ := startServer(t, ServerConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS(t), Authorize: authorize}, sink)
	src := newSliceSource(makeRecords(50, nil))
	cl, _ := startClient(t, fastClient(srv.Addr().String(), pki.agentTLS(t, agent, pki), agent), src)
	testenv.WaitFor(t, 10*time.Second, "records delivered", func() bool { return src.left() == 0 })

	mu.Lock()
	revoked[agent] = true
	mu.Unlock()
	if n := srv.Disconnect(agent, "agent "+agent+" is revoked"); n != 1 {
		t.Fatalf("Disconnect closed %d connections, want 1", n)
	}
	testenv.WaitFor(t, 10*time.Second, "handshakes refused", func() bool { return srv.Stats().Forbidden >= 2 })
	testenv.WaitFor(t, 5*time.Second, "client to see the reason", func() bool { return strings.Contains(cl.Stats().LastError, "revoked") })
	// A second uplink of the same agent (its spool filling meanwhile) is
	// refused too and keeps every record.
	src = newSliceSource(makeRecords(20, nil))
	cl2, _ := startClient(t, fastClient(srv.Addr().String(), pki.agentTLS(t, agent, pki), agent), src)
	testenv.WaitFor(t, 10*time.Second, "second client refused", func() bool { return strings.Contains(cl2.Stats().LastError, "revoked") })
	if left := src.left(); left != 20 {
		t.Fatalf("%d records left, want all 20 kept while revoked", left)
	}

	mu.Lock()
	delete(revoked, agent)
	mu.Unlock()
	testenv.WaitFor(t, 10*time.Second, "delivery after unrevoke", func() bool { return src.left() == 0 })
}

// TestExpiredCertificateClosesConnection: a connection lives no longer than
// its client certificate.
func TestExpiredCertificateClosesConnection(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, "site")
	sink := newMemSink()
	srv, _ := startServer(t, ServerConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS(t)}, sink)
	csr, key, err := NewAgentCSR(agent)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := SignAgentCSR(pki.caCert, pki.caKey, csr, agent, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	src := newSliceSource(makeRecords(10, nil))
	startClient(t, fastClient(srv.Addr().String(), pki.clientTLS(t, "short", cert, key, pki), agent), src)
	testenv.WaitFor(t, 10*time.Second, "records delivered", func() bool { return src.left() == 0 })
	testenv.WaitFor(t, 10*time.Second, "connection closed at expiry", func() bool { return srv.Stats().Expired == 1 })
}
