package backend

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
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/transport"
)

// enrollPKI writes a CA with its key (ca.crt, ca.key) and a backend
// certificate for 127.0.0.1 into dir.
func enrollPKI(t *testing.T, dir string) (caCert, caKey []byte) {
	t.Helper()
	caCert, caKey, err := transport.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := transport.WriteFiles(dir, "ca", caCert, caKey); err != nil {
		t.Fatal(err)
	}
	srvCert, srvKey, err := transport.IssueServer(caCert, caKey, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := transport.WriteFiles(dir, "server", srvCert, srvKey); err != nil {
		t.Fatal(err)
	}
	return caCert, caKey
}

func newCSR(t *testing.T) (csr, key []byte) {
	t.Helper()
	csr, key, err := transport.NewAgentCSR("")
	if err != nil {
		t.Fatal(err)
	}
	return csr, key
}

func wantIdentityError(t *testing.T, err error, status int, msgPart string) {
	t.Helper()
	ie, ok := errors.AsType[*IdentityError](err)
	if !ok || ie.Status != status || !strings.Contains(ie.Msg, msgPart) {
		t.Fatalf("err = %v, want status %d containing %q", err, status, msgPart)
	}
}

// TestBootstrapTokens enrolls with bootstrap tokens: valid, wrong, expired,
// used up, an ID already held, a revoked ID, a malformed request.
func TestBootstrapTokens(t *testing.T) {
	caCert, caKey := enrollPKI(t, t.TempDir())
	now := time.Now()
	st := openTestStore(t, BadgerConfig{})
	id, err := NewIdentity(st, IdentityConfig{CACert: caCert, CAKey: caKey, Validity: time.Hour, Now: func() time.Time { return now }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	once, _, err := id.CreateBootstrapToken(time.Hour, 1)
	if err != nil {
		t.Fatal(err)
	}
	many, _, err := id.CreateBootstrapToken(24*time.Hour, 10)
	if err != nil {
		t.Fatal(err)
	}
	short, _, err := id.CreateBootstrapToken(time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := id.Revoke("node-bad"); err != nil {
		t.Fatal(err)
	}
	csr, _ := newCSR(t)
	tests := []struct {
		name, token, agent string
		csr                []byte
		advance            time.Duration
		status             int // 0: success
		msg                string
	}{
		{"valid", once, "node-a", csr, 0, 0, ""},
		{"used up", once, "node-b", csr, 0, statusUnauthorized, "used up"},
		{"wrong token", "hbt-0000", "node-b", csr, 0, statusUnauthorized, "unknown bootstrap token"},
		{"ID already enrolled", many, "node-a", csr, 0, statusConflict, "already enrolled"},
		{"revoked ID", many, "node-bad", csr, 0, statusForbidden, "revoked"},
		{"bad CSR", many, "node-c", []byte("not a csr"), 0, statusBadRequest, "csr"},
		{"second use of a multi-use token", many, "node-c", csr, 0, 0, ""},
		{"expired", short, "node-d", csr, 2 * time.Minute, statusUnauthorized, "expired"},
		// node-a's certificate (1h) has expired: its ID is free again.
		{"ID free after its certificate expired", many, "node-a", csr, 2 * time.Hour, 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now = now.Add(tc.advance)
			iss, err := id.Enroll(context.Background(), EnrollRequest{Kind: KindBootstrap, Token: tc.token, AgentID: tc.agent, CSR: string(tc.csr)})
			if tc.status != 0 {
				wantIdentityError(t, err, tc.status, tc.msg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if iss.AgentID != tc.agent || !strings.Contains(iss.Certificate, "BEGIN CERTIFICATE") {
				t.Fatalf("issued %+v", iss)
			}
		})
	}
	enrolled, err := id.Enrolled(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if e := enrolled["node-c"]; e.Kind != KindBootstrap {
		t.Fatalf("enrollments %+v: want node-c by bootstrap token", enrolled)
	}
}

// TestEnrollOffWithoutCAKey: without the CA key the endpoint says why.
func TestEnrollOffWithoutCAKey(t *testing.T) {
	st := openTestStore(t, BadgerConfig{})
	id, err := NewIdentity(st, IdentityConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := newCSR(t)
	_, err = id.Enroll(context.Background(), EnrollRequest{Kind: KindBootstrap, Token: "x", AgentID: "a", CSR: string(csr)})
	wantIdentityError(t, err, statusUnavailable, "caKeyFile")
	_, err = id.Renew("a", string(csr))
	wantIdentityError(t, err, statusUnavailable, "caKeyFile")
}

// httpsClient trusts caCert and presents cert when it is set.
func httpsClient(caCert []byte, cert *tls.Certificate) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caCert)
	c := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: c}, Timeout: 10 * time.Second}
}

func postJSON(t *testing.T, c *http.Client, url, token string, body any) (int, map[string]any) {
	t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("POST %s: status %d, body %q: %v", url, resp.StatusCode, raw, err)
	}
	return resp.StatusCode, out
}

// TestServiceEnrollRenewRevoke runs the whole backend with enrollment over
// HTTPS: a bootstrap token made through the API enrolls an agent, whose
// certificate carries batches over QUIC; revoking it closes its live
// connection, refuses its next handshake and its renewal; unrevoking lets
// it renew and deliver again, with nothing lost.
func TestServiceEnrollRenewRevoke(t *testing.T) {
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	caCert, _ := enrollPKI(t, pki)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	svc, err := NewService(Config{
		DataDir: filepath.Join(dir, "data"), APIAddr: "127.0.0.1:0", IngestAddr: "127.0.0.1:0", Token: testToken,
		CAFile: filepath.Join(pki, "ca.crt"), CertFile: filepath.Join(pki, "server.crt"), KeyFile: filepath.Join(pki, "server.key"),
		CAKeyFile: filepath.Join(pki, "ca.key"), APITLS: true, Enroll: EnrollConfig{CertValidity: confval.Duration(time.Hour)},
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var g errgroup.Group
	g.Go(func() error { return svc.Run(ctx) })
	defer func() {
		cancel()
		if err := g.Wait(); err != nil {
			t.Error(err)
		}
	}()
	base := "https://" + svc.APIAddr().String()
	anon := httpsClient(caCert, nil)
	defer anon.CloseIdleConnections()

	// Bearer token required to make a bootstrap token.
	if code, _ := postJSON(t, anon, base+"/api/v1/tokens", "", map[string]any{}); code != http.StatusUnauthorized {
		t.Fatalf("token without bearer: status %d", code)
	}
	code, tok := postJSON(t, anon, base+"/api/v1/tokens", testToken, map[string]any{"ttl": "1h", "uses": 1})
	if code != http.StatusOK {
		t.Fatalf("create token: %d %v", code, tok)
	}
	csr, key := newCSR(t)
	code, iss := postJSON(t, anon, base+"/api/v1/enroll", "", EnrollRequest{Kind: KindBootstrap, Token: tok["token"].(string), AgentID: "node-a", CSR: string(csr)})
	if code != http.StatusOK || iss["agent_id"] != "node-a" {
		t.Fatalf("enroll: %d %v", code, iss)
	}
	cert, err := tls.X509KeyPair([]byte(iss["certificate"].(string)), key)
	if err != nil {
		t.Fatal(err)
	}
	agentHTTP := httpsClient(caCert, &cert)
	defer agentHTTP.CloseIdleConnections()
	renew := func() (int, map[string]any) {
		csr, _ := newCSR(t)
		return postJSON(t, agentHTTP, base+"/api/v1/renew", "", map[string]string{"csr": string(csr)})
	}
	if code, out := renew(); code != http.StatusOK || out["agent_id"] != "node-a" {
		t.Fatalf("renew: %d %v", code, out)
	}
	if code, out := postJSON(t, anon, base+"/api/v1/renew", "", map[string]string{"csr": string(csr)}); code != http.StatusUnauthorized {
		t.Fatalf("renew without a client certificate: %d %v", code, out)
	}

	// The enrolled certificate carries batches over QUIC.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caCert)
	clientTLS := &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
	src := &recordSource{}
	for i := range 20 {
		src.pending = append(src.pending, eventRec(uint64(i+1), mkEvent("node-a", api.EventKind_EVENT_KIND_EXEC, t0)))
	}
	cl, err := transport.NewClient(transport.ClientConfig{
		Addr: svc.IngestAddr().String(), TLS: clientTLS, AgentID: "node-a",
		BackoffMin: 20 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
		HeartbeatInterval: 50 * time.Millisecond, PollInterval: 20 * time.Millisecond,
	}, src, log)
	if err != nil {
		t.Fatal(err)
	}
	g.Go(func() error { return cl.Run(ctx) })
	testenv.WaitFor(t, 10*time.Second, "records delivered", func() bool { return src.left() == 0 })
	testenv.WaitFor(t, 10*time.Second, "client connected", func() bool { return cl.Stats().Connected })

	if code, out := postJSON(t, anon, base+"/api/v1/agents/node-a/revoke", testToken, nil); code != http.StatusOK {
		t.Fatalf("revoke: %d %v", code, out)
	}
	testenv.WaitFor(t, 10*time.Second, "live connection closed and handshakes refused", func() bool {
		return svc.ingest.Stats().Forbidden >= 2 && strings.Contains(cl.Stats().LastError, "revoked")
	})
	src.mu.Lock()
	src.pending = append(src.pending, eventRec(100, mkEvent("node-a", api.EventKind_EVENT_KIND_EXEC, t0)))
	src.mu.Unlock()
	if code, out := renew(); code != http.StatusForbidden || !strings.Contains(fmt.Sprint(out["error"]), "revoked") {
		t.Fatalf("renew while revoked: %d %v", code, out)
	}
	code, tok = postJSON(t, anon, base+"/api/v1/tokens", testToken, map[string]any{})
	if code != http.StatusOK {
		t.Fatal(tok)
	}
	if code, out := postJSON(t, anon, base+"/api/v1/enroll", "", EnrollRequest{Kind: KindBootstrap, Token: tok["token"].(string), AgentID: "node-a", CSR: string(csr)}); code != http.StatusForbidden {
		t.Fatalf("enroll while revoked: %d %v", code, out)
	}
	if src.left() != 1 {
		t.Fatalf("%d records left while revoked, want 1 kept", src.left())
	}
	agents := decodeAgents(t, agentHTTP, base)
	if a := agents["node-a"]; !a.Revoked || a.Enrollment == nil || a.Enrollment.Kind != KindBootstrap {
		t.Fatalf("agent list while revoked: %+v", a)
	}

	if code, out := postJSON(t, anon, base+"/api/v1/agents/node-a/unrevoke", testToken, nil); code != http.StatusOK {
		t.Fatalf("unrevoke: %d %v", code, out)
	}
	if code, out := renew(); code != http.StatusOK {
		t.Fatalf("renew after unrevoke: %d %v", code, out)
	}
	testenv.WaitFor(t, 10*time.Second, "delivery after unrevoke", func() bool { return src.left() == 0 })
}

func decodeAgents(t *testing.T, c *http.Client, base string) map[string]agentJSON {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/agents", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Agents []agentJSON }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	m := map[string]agentJSON{}
	for _, a := range out.Agents {
		m[a.AgentID] = a
	}
	return m
}

func TestDecodeEnrollRequest(t *testing.T) {
	tests := []struct {
		name, body, err string
	}{
		{"bootstrap", `{"kind":"bootstrap","token":"t","agent_id":"n1","csr":"x"}`, ""},
		{"service account without id", `{"kind":"serviceAccount","token":"t","csr":"x"}`, ""},
		{"unknown field", `{"kind":"bootstrap","token":"t","agent_id":"n1","csr":"x","admin":true}`, "unknown field"},
		{"bad kind", `{"kind":"root","token":"t","csr":"x"}`, "kind"},
		{"bootstrap without id", `{"kind":"bootstrap","token":"t","csr":"x"}`, "agent_id"},
		{"bad id", `{"kind":"bootstrap","token":"t","agent_id":"../x","csr":"x"}`, "agent_id"},
		{"no token", `{"kind":"bootstrap","agent_id":"n1","csr":"x"}`, "token"},
		{"no csr", `{"kind":"bootstrap","token":"t","agent_id":"n1"}`, "csr"},
		{"two objects", `{"kind":"bootstrap","token":"t","agent_id":"n1","csr":"x"}{}`, "after"},
		{"not JSON", `kind=bootstrap`, "request body"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeEnrollRequest([]byte(tc.body))
			if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
}

// FuzzDecodeEnrollRequest: the enroll body comes from anyone who can reach
// the API; decoding must never panic, and what it accepts is bounded.
func FuzzDecodeEnrollRequest(f *testing.F) {
	f.Add([]byte(`{"kind":"bootstrap","token":"t","agent_id":"n1","csr":"x"}`))
	f.Add([]byte(`{"kind":"serviceAccount","token":"eyJ","csr":"-----BEGIN CERTIFICATE REQUEST-----\n"}`))
	f.Add([]byte(`{"kind":"bootstrap","token":"t","agent_id":"n1","csr":"x"} []`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeEnrollRequest(b)
		if err != nil {
			return
		}
		if req.Kind != KindBootstrap && req.Kind != KindServiceAccount {
			t.Fatalf("accepted kind %q", req.Kind)
		}
		if req.Token == "" || len(req.Token) > maxTokenBytes || req.CSR == "" {
			t.Fatalf("accepted %+v", req)
		}
		if req.AgentID != "" {
			if err := transport.ValidAgentID(req.AgentID); err != nil {
				t.Fatalf("accepted agent_id: %v", err)
			}
		}
		// What it accepts goes to the CSR parser next, which must not
		// panic either.
		_, _ = transport.ParseCSR([]byte(req.CSR))
	})
}
