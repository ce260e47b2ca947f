package backend

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/harrier-sec/harrier/internal/confval/confvaltest"
	"github.com/harrier-sec/harrier/transport"
)

// TestLoadConfig: `harrier backend -c` reads dataDir and the backend
// section strictly, and puts what the section leaves unset under dataDir.
func TestLoadConfig(t *testing.T) {
	confvaltest.CheckLoad(t, func(path string) error { _, err := LoadConfig(path); return err }, []confvaltest.Case{
		{Name: "empty", YAML: ""},
		{Name: "shipped shape", YAML: "dataDir: /var/lib/harrier-backend\nbackend:\n  apiAddr: 127.0.0.1:9470\n  ingestAddr: \":9471\"\n  caFile: /etc/harrier/pki/ca.crt\n"},
		{Name: "unknown field", YAML: "backend:\n  apiAdr: 127.0.0.1:1\n", Want: "apiAdr"},
		{Name: "bad address", YAML: "backend:\n  apiAddr: nowhere\n", Want: "apiAddr"},
		{Name: "bad severity", YAML: "backend:\n  vulnDB:\n    minSeverity: dire\n", Want: "minSeverity"},
		{Name: "exports", YAML: "backend:\n  exports:\n  - name: siem\n    type: syslog\n    format: cef\n    syslog: {network: tls, address: \"siem:6514\", tls: {caFile: /ca.crt}}\n    filter: {minSeverity: high, namespaces: [prod]}\n    maxPerSecond: 50\n  - name: hook\n    type: webhook\n    webhook: {url: \"https://h/x\", hmacKeyFile: /k}\n  - name: usb\n    type: file\n    format: ocsf\n    file: {path: /media/usb/harrier.jsonl, maxBytes: 1000000, keep: 3}\n"},
		{Name: "export unknown field", YAML: "backend:\n  exports:\n  - name: a\n    type: file\n    file: {path: /x, rotate: 3}\n", Want: "rotate"},
		{Name: "export secret inline", YAML: "backend:\n  exports:\n  - name: a\n    type: webhook\n    webhook: {url: \"https://h/\", hmacKey: s3cret}\n", Want: "hmacKey"},
		{Name: "export bad type", YAML: "backend:\n  exports:\n  - name: a\n    type: pigeon\n", Want: "type \"pigeon\": must be syslog, webhook, file, otlp, splunk, elasticsearch or kafka"},
		{Name: "export kafka", YAML: "backend:\n  exports:\n  - name: k\n    type: kafka\n    format: ecs\n    kafka: {brokers: [\"k:9093\"], topic: alerts, tls: {}, sasl: {mechanism: scram-sha-512, username: h, passwordFile: /p}}\n"},
		{Name: "export kafka inline password", YAML: "backend:\n  exports:\n  - name: k\n    type: kafka\n    kafka: {brokers: [\"k:9093\"], topic: a, sasl: {mechanism: plain, username: h, password: x}}\n", Want: "password"},
		{Name: "export missing section", YAML: "backend:\n  exports:\n  - name: a\n    type: syslog\n", Want: "needs a syslog: section"},
		{Name: "export bad network", YAML: "backend:\n  exports:\n  - name: a\n    type: syslog\n    syslog: {network: sctp, address: \"h:514\"}\n", Want: "syslog.network"},
		{Name: "export duplicate name", YAML: "backend:\n  exports:\n  - {name: a, type: file, file: {path: /x}}\n  - {name: a, type: file, file: {path: /y}}\n", Want: "used twice"},
		{Name: "export bad severity", YAML: "backend:\n  exports:\n  - {name: a, type: file, file: {path: /x}, filter: {minSeverity: dire}}\n", Want: "filter.minSeverity"},
		{Name: "export authorization header", YAML: "backend:\n  exports:\n  - {name: a, type: webhook, webhook: {url: \"https://h/\", headers: {Authorization: x}}}\n", Want: "tokenFile"},
		{Name: "api off loopback without TLS", YAML: "backend:\n  apiAddr: \":9470\"\n", Want: "listens beyond loopback without TLS: set apiTLS: true"},
		{Name: "api on a LAN address without TLS", YAML: "backend:\n  apiAddr: 192.0.2.7:9470\n", Want: "insecureAPIWithoutTLS"},
		{Name: "api off loopback with TLS", YAML: "backend:\n  apiAddr: \":9470\"\n  apiTLS: true\n"},
		{Name: "api off loopback waived", YAML: "backend:\n  apiAddr: \":9470\"\n  insecureAPIWithoutTLS: true\n"},
		{Name: "api on localhost", YAML: "backend:\n  apiAddr: localhost:9470\n"},
		{Name: "api on IPv6 loopback", YAML: "backend:\n  apiAddr: \"[::1]:9470\"\n"},
		{Name: "site certificate without key", YAML: "backend:\n  apiTLS: true\n  apiCertFile: /etc/site.crt\n", Want: "set both or neither"},
		{Name: "site certificate without TLS", YAML: "backend:\n  apiCertFile: /etc/site.crt\n  apiKeyFile: /etc/site.key\n", Want: "apiTLS is not"},
		// The agent's sections belong to `harrier agent` and `harrier run`.
		{Name: "agent section", YAML: "uplink:\n  addr: b:9471\n", Want: "uplink"},
	})
	cfg := FileConfig{DataDir: "/d", Backend: Config{CertFile: "/etc/b.crt"}}.Resolved()
	want := Config{DataDir: "/d/backend", TokenDir: "/d", CAFile: "/d/pki/ca.crt", CertFile: "/etc/b.crt", KeyFile: "/d/pki/backend.key"}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("resolved = %+v, want %+v", cfg, want)
	}
	if got := (FileConfig{}).Resolved().TokenFile(); got != "/var/lib/harrier/api-token" {
		t.Errorf("default token file %s", got)
	}
}

// TestServiceReadyAfter: a process embedding the backend holds /readyz at
// 503 until its other parts are up, while /livez answers at once.
func TestServiceReadyAfter(t *testing.T) {
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	if _, _, err := transport.InitCA(pki); err != nil {
		t.Fatal(err)
	}
	if err := transport.IssueBackendCert(pki, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	cfg := FileConfig{DataDir: dir, Backend: Config{APIAddr: "127.0.0.1:0", IngestAddr: "127.0.0.1:0", Token: testToken}}.Resolved()
	svc, err := NewService(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	svc.ReadyAfter(ready)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	status := func(path string) int {
		t.Helper()
		resp, err := http.Get("http://" + svc.APIAddr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status("/livez"); got != http.StatusOK {
		t.Errorf("livez before ready: %d", got)
	}
	if got := status("/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("readyz before ready: %d, want 503", got)
	}
	close(ready)
	if got := status("/readyz"); got != http.StatusOK {
		t.Errorf("readyz after ready: %d, want 200", got)
	}
}

// TestAPISiteCertificate: with apiCertFile/apiKeyFile the API serves the
// site's own certificate (another CA than the agents'), and a browser's
// session cookie over it is Secure.
func TestAPISiteCertificate(t *testing.T) {
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	if _, _, err := transport.InitCA(pki); err != nil {
		t.Fatal(err)
	}
	if err := transport.IssueBackendCert(pki, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	site := filepath.Join(dir, "site")
	if _, _, err := transport.InitCA(site); err != nil {
		t.Fatal(err)
	}
	if err := transport.IssueServerCert(site, "console", []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	cfg := FileConfig{DataDir: dir, Backend: Config{APIAddr: "127.0.0.1:0", IngestAddr: "127.0.0.1:0", Token: testToken, APITLS: true,
		APICertFile: filepath.Join(site, "console.crt"), APIKeyFile: filepath.Join(site, "console.key")}}.Resolved()
	svc, err := NewService(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	client := func(caFile string) *http.Client {
		pool, err := transport.LoadCAPool(caFile)
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	base := "https://" + svc.APIAddr().String()
	if _, err := client(filepath.Join(pki, "ca.crt")).Get(base + "/livez"); err == nil {
		t.Error("the agents' CA verifies the console's certificate: the site's was not served")
	}
	resp, err := client(filepath.Join(site, "ca.crt")).PostForm(base+"/login", url.Values{"username": {"api-token"}, "password": {testToken}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var secure bool
	for _, c := range resp.Cookies() {
		secure = secure || (c.Name == cookieName && c.Secure && c.HttpOnly)
	}
	if resp.StatusCode != http.StatusSeeOther || !secure {
		t.Errorf("sign-in over HTTPS: %d, cookies %v: want a Secure, HttpOnly session cookie", resp.StatusCode, resp.Cookies())
	}
}
