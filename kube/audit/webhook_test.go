package audit

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testpki"
)

func TestReceiver(t *testing.T) {
	ca, err := testpki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	srvPair, _ := ca.Issue(testpki.Cert{CommonName: "harrier", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true})
	srvCert, _ := srvPair.TLS()
	clientPair, _ := ca.Issue(testpki.Cert{CommonName: "kube-apiserver-audit"})
	clientCert, _ := clientPair.TLS()
	out := make(chan *api.Event, 16)
	r := &Receiver{Out: out, MaxBodyBytes: 4096, Log: slog.New(slog.DiscardHandler)}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx, l, ServerTLS(srvCert, ca.Pool())) }()
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
