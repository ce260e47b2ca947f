package audit

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testpki"
)

// receiverPKI is a CA, the receiver's serving certificate for 127.0.0.1
// (as tls.Config.GetCertificate) and the API server's client certificate,
// both from that CA.
func receiverPKI(t *testing.T) (*testpki.CA, func(*tls.ClientHelloInfo) (*tls.Certificate, error), tls.Certificate) {
	t.Helper()
	ca, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	srvPair, err := ca.Issue(testpki.Cert{CommonName: "harrier", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := srvPair.TLS()
	if err != nil {
		t.Fatal(err)
	}
	clientPair, err := ca.Issue(testpki.Cert{CommonName: "kube-apiserver-audit"})
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := clientPair.TLS()
	if err != nil {
		t.Fatal(err)
	}
	return ca, func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &srvCert, nil }, clientCert
}

func TestReceiver(t *testing.T) {
	ca, srvCert, clientCert := receiverPKI(t)
	out := make(chan *api.Event, 16)
	r := &Receiver{Out: out, MaxBodyBytes: 4096, Log: slog.New(slog.DiscardHandler)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, l, ServerTLS(srvCert, ca.Pool(), false)) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	url := "https://" + l.Addr().String() + "/"
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: certs}}}
	}
	good := `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[` + sampleEvent + `]}`
	tests := []struct {
		name   string
		client *http.Client
		method string
		body   string
		want   int // 0: the TLS handshake fails
	}{
		{"good", client(clientCert), http.MethodPost, good, http.StatusOK},
		{"no client certificate", client(), http.MethodPost, good, 0},
		{"get", client(clientCert), http.MethodGet, "", http.StatusMethodNotAllowed},
		{"garbage", client(clientCert), http.MethodPost, "{not json", http.StatusBadRequest},
		{"not audit", client(clientCert), http.MethodPost, `{"kind":"PodList","apiVersion":"v1","items":[]}`, http.StatusBadRequest},
		{"too big", client(clientCert), http.MethodPost, `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[` + strings.Repeat(sampleEvent+",", 10) + sampleEvent + `]}`, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, url, bytes.NewReader([]byte(tt.body)))
			resp, err := tt.client.Do(req)
			if tt.want == 0 {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("accepted without a client certificate: %d", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.want)
			}
		})
	}
	if len(out) != 1 {
		t.Fatalf("%d events passed on, want 1", len(out))
	}
	if st := r.Stats(); st.Events != 1 || st.Rejected != 3 {
		t.Fatalf("stats %+v, want 1 event and 3 rejected", st)
	}
}

// TestReceiverAuth checks each way the API server may authenticate: a
// client certificate, a bearer token, or either.
func TestReceiverAuth(t *testing.T) {
	ca, srvCert, clientCert := receiverPKI(t)
	otherCA, _ := testpki.NewCA()
	strangerPair, _ := otherCA.Issue(testpki.Cert{CommonName: "stranger"})
	strangerCert, _ := strangerPair.TLS()
	tokenPath := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenPath, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := `{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[` + sampleEvent + `]}`
	type attempt struct {
		name  string
		cert  *tls.Certificate
		token string
		want  int // 0: the TLS handshake fails
	}
	tests := []struct {
		name     string
		clientCA bool
		token    bool
		attempts []attempt
	}{
		{"client CA only", true, false, []attempt{
			{"certificate", &clientCert, "", http.StatusOK},
			{"token only", nil, "s3cret-token", 0},
		}},
		{"token only", false, true, []attempt{
			{"token", nil, "s3cret-token", http.StatusOK},
			{"wrong token", nil, "guess", http.StatusUnauthorized},
			{"nothing", nil, "", http.StatusUnauthorized},
			{"certificate but no token", &clientCert, "", http.StatusUnauthorized},
		}},
		{"either", true, true, []attempt{
			{"certificate", &clientCert, "", http.StatusOK},
			{"token", nil, "s3cret-token", http.StatusOK},
			{"wrong token", nil, "guess", http.StatusUnauthorized},
			{"certificate from another CA", &strangerCert, "", 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := make(chan *api.Event, 16)
			r := &Receiver{Out: out, Log: slog.New(slog.DiscardHandler)}
			var pool *x509.CertPool
			if tt.clientCA {
				pool = ca.Pool()
			}
			if tt.token {
				r.Token = &TokenFile{Path: tokenPath}
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- r.Serve(ctx, l, ServerTLS(srvCert, pool, tt.token)) }()
			defer func() { cancel(); <-done }()
			accepted := 0
			for _, a := range tt.attempts {
				tlsConf := &tls.Config{RootCAs: ca.Pool()}
				if a.cert != nil {
					tlsConf.Certificates = []tls.Certificate{*a.cert}
				}
				client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf}}
				req, _ := http.NewRequest(http.MethodPost, "https://"+l.Addr().String()+"/", strings.NewReader(good))
				if a.token != "" {
					req.Header.Set("Authorization", "Bearer "+a.token)
				}
				resp, err := client.Do(req)
				if a.want == 0 {
					if err == nil {
						resp.Body.Close()
						t.Errorf("%s: accepted (%d), want a failed handshake", a.name, resp.StatusCode)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", a.name, err)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != a.want {
					t.Errorf("%s: status %d, want %d", a.name, resp.StatusCode, a.want)
				}
				if a.want == http.StatusOK {
					accepted++
				}
			}
			if len(out) != accepted {
				t.Errorf("%d events passed on, want %d", len(out), accepted)
			}
		})
	}
	// A rotated token takes effect without a restart.
	tf := &TokenFile{Path: tokenPath}
	if tok, err := tf.Load(); err != nil || string(tok) != "s3cret-token" {
		t.Fatalf("Load: %q %v", tok, err)
	}
	if err := os.WriteFile(tokenPath, []byte("rotated-token-value"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A modification time of its own even where the clock is coarse (the
	// size differs too; either is a change).
	later := time.Now().Add(time.Second)
	if err := os.Chtimes(tokenPath, later, later); err != nil {
		t.Fatal(err)
	}
	if tok, err := tf.Load(); err != nil || string(tok) != "rotated-token-value" {
		t.Fatalf("after rotation: %q %v", tok, err)
	}
	if err := os.WriteFile(tokenPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := tf.Load(); err == nil {
		t.Fatal("an empty token file was accepted")
	}
}
