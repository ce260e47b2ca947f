package transport

import (
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPKIChainsAndUsages(t *testing.T) {
	caCert, caKey, err := NewCA("Harrier test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := parseCertPEM(caCert)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IsCA || !ca.MaxPathLenZero || ca.Subject.CommonName != "Harrier test CA" {
		t.Fatalf("CA: IsCA %v MaxPathLenZero %v CN %q", ca.IsCA, ca.MaxPathLenZero, ca.Subject.CommonName)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	srvPEM, _, err := IssueServer(caCert, caKey, []string{"backend.site", "127.0.0.1", "::1"}, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := parseCertPEM(srvPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"backend.site", "127.0.0.1", "::1"} {
		if _, err := srv.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("server cert for %s: %v", host, err)
		}
	}
	if srv.NotAfter.After(ca.NotAfter) {
		t.Errorf("server cert outlives its CA: %v > %v", srv.NotAfter, ca.NotAfter)
	}

	agentPEM, _, err := IssueAgent(caCert, caKey, "node-7.edge", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ag, err := parseCertPEM(agentPEM)
	if err != nil {
		t.Fatal(err)
	}
	chains, err := ag.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ag.Verify(x509.VerifyOptions{Roots: roots}); err == nil {
		t.Error("agent cert verifies for server auth")
	}
	id, err := AgentID(tls.ConnectionState{VerifiedChains: chains})
	if err != nil || id != "node-7.edge" {
		t.Fatalf("AgentID = %q, %v", id, err)
	}
	if len(ag.URIs) != 1 || ag.URIs[0].String() != "harrier://agent/node-7.edge" {
		t.Fatalf("agent URIs %v", ag.URIs)
	}
}

func TestPKIRefusesBadInput(t *testing.T) {
	caCert, caKey, err := NewCA("CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherCert, otherKey, err := NewCA("other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leafCert, leafKey, err := IssueAgent(caCert, caKey, "a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		fn   func() error
	}{
		{"empty CA name", func() error { _, _, err := NewCA("", time.Hour); return err }},
		{"zero validity", func() error { _, _, err := NewCA("x", 0); return err }},
		{"no hosts", func() error { _, _, err := IssueServer(caCert, caKey, nil, time.Hour); return err }},
		{"empty agent ID", func() error { _, _, err := IssueAgent(caCert, caKey, "", time.Hour); return err }},
		{"agent ID with slash", func() error { _, _, err := IssueAgent(caCert, caKey, "a/b", time.Hour); return err }},
		{"agent ID too long", func() error {
			_, _, err := IssueAgent(caCert, caKey, strings.Repeat("a", maxAgentIDLen+1), time.Hour)
			return err
		}},
		{"key of another CA", func() error { _, _, err := IssueAgent(caCert, otherKey, "a", time.Hour); return err }},
		{"leaf as CA", func() error { _, _, err := IssueAgent(leafCert, leafKey, "b", time.Hour); return err }},
		{"garbage CA", func() error { _, _, err := IssueAgent([]byte("nope"), caKey, "a", time.Hour); return err }},
		{"file name with slash", func() error { return WriteFiles(t.TempDir(), "../x", otherCert, nil) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.fn(); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestWriteFilesModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	cert, key, err := NewCA("CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFiles(dir, "ca", cert, key); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{"ca.crt": 0o644, "ca.key": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "ca.key")); string(got) != string(key) {
		t.Error("key file differs")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("dir holds %d entries, want 2 (no temporary files left)", len(entries))
	}
}

func TestAgentIDFromState(t *testing.T) {
	cert := func(cn string, uris ...string) *x509.Certificate {
		c := &x509.Certificate{}
		c.Subject.CommonName = cn
		for _, u := range uris {
			pu, err := url.Parse(u)
			if err != nil {
				t.Fatal(err)
			}
			c.URIs = append(c.URIs, pu)
		}
		return c
	}
	state := func(c *x509.Certificate) tls.ConnectionState {
		return tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}
	}
	tests := []struct {
		name    string
		state   tls.ConnectionState
		want    string
		wantErr bool
	}{
		{"URI and CN agree", state(cert("a-1", "harrier://agent/a-1")), "a-1", false},
		{"CN only (site PKI)", state(cert("a-1")), "a-1", false},
		{"URI only", state(cert("", "harrier://agent/a-1")), "a-1", false},
		{"other URIs ignored", state(cert("a-1", "spiffe://x/y")), "a-1", false},
		{"URI and CN differ", state(cert("a-2", "harrier://agent/a-1")), "", true},
		{"two agent URIs", state(cert("", "harrier://agent/a-1", "harrier://agent/a-2")), "", true},
		{"no identity", state(cert("")), "", true},
		{"invalid ID", state(cert("a b")), "", true},
		{"not verified", tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert("a-1")}}, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AgentID(tc.state)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("AgentID = %q, %v; want %q, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
