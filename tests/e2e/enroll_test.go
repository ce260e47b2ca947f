package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestEnrollBootstrapAndRevoke does what the README's Enrollment section
// tells a plain Linux site: the backend gets ca.key, `harrier tokens create`
// makes a token, an agent with only ca.crt and the token enrolls and
// delivers; `harrier agents revoke` stops it at once (it keeps spooling) and
// `harrier agents unrevoke` lets what it spooled meanwhile through.
func TestEnrollBootstrapAndRevoke(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildHarrier(t)
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("harrier %v: %v\n%s%s", args, err, out, stderr.String())
		}
		return string(out)
	}
	run("certs", "init", "--out", pki)
	run("certs", "backend", "--out", pki, "--host", "127.0.0.1")
	ingest, apiAddr, agentMetrics := testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)
	backendCfg := filepath.Join(dir, "backend.yaml")
	conf := fmt.Sprintf(`dataDir: %[1]s/backend
backend:
  apiAddr: %[2]s
  ingestAddr: %[3]s
  token: e2e-token
  caFile: %[4]s/ca.crt
  certFile: %[4]s/backend.crt
  keyFile: %[4]s/backend.key
  caKeyFile: %[4]s/ca.key
  apiTLS: true
`, dir, apiAddr, ingest, pki)
	if err := os.WriteFile(backendCfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, bin, "backend", "-c", backendCfg)
	base := "https://" + apiAddr
	client := caClient(t, filepath.Join(pki, "ca.crt"))
	testenv.WaitFor(t, 30*time.Second, "the backend's HTTPS API", func() bool {
		resp, err := client.Get(base + "/livez")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	tokenFile := filepath.Join(dir, "api-token")
	if err := os.WriteFile(tokenFile, []byte("e2e-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cli := []string{"--api", base, "--token-file", tokenFile, "--ca-file", filepath.Join(pki, "ca.crt")}
	token := strings.TrimSpace(run(append([]string{"tokens", "create", "--ttl", "1h", "--uses", "1"}, cli...)...))
	if !strings.HasPrefix(token, "hbt-") {
		t.Fatalf("token %q", token)
	}

	// The node gets ca.crt and the token, nothing else.
	node := filepath.Join(dir, "node")
	markers := filepath.Join(dir, "markers")
	for _, d := range []string{filepath.Join(node, "pki"), markers} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	caCert, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(node, "pki", "ca.crt"), caCert, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(node, "bootstrap-token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	agentCfg := filepath.Join(dir, "agent.yaml")
	conf = fmt.Sprintf(`dataDir: %[1]s
metricsAddr: %[2]s
sensor:
  watchPaths: [%[3]s/]
spool:
  eventKinds: [file_open]
uplink:
  addr: %[4]s
  serverName: 127.0.0.1
  enroll:
    server: %[5]s
    tokenFile: %[1]s/bootstrap-token
    kind: bootstrap
`, node, agentMetrics, markers, ingest, base)
	if err := os.WriteFile(agentCfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	agentCmd := startDaemon(t, bin, "agent", "-c", agentCfg, "--node", "edge-enrolled")
	if st, err := os.Stat(filepath.Join(node, "pki", "agent.key")); err == nil && st.Mode().Perm() != 0o600 {
		t.Fatalf("enrolled key mode %v", st.Mode())
	}

	opens := func(prefix string, n int) {
		t.Helper()
		script := fmt.Sprintf("for i in $(seq 1 %d); do : > %s/%s-$i; done", n, markers, prefix)
		if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
	}
	arrived := func(path string) bool {
		req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/events?kind=file_open&limit=1000", nil)
		req.Header.Set("Authorization", "Bearer e2e-token")
		resp, err := client.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var out struct {
			Events []json.RawMessage `json:"events"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Logf("events: %s: %v", resp.Status, err)
			return false
		}
		for _, raw := range out.Events {
			ev := &api.Event{}
			if protojson.Unmarshal(raw, ev) == nil && ev.GetFileOpen().GetPath() == path {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(60 * time.Second)
	// Repeated until one arrives: the first may come before the sensor is
	// attached.
	for i := 1; ; i++ {
		opens(fmt.Sprintf("before-%d", i), 1)
		time.Sleep(500 * time.Millisecond)
		if arrived(filepath.Join(markers, fmt.Sprintf("before-%d-1", i))) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing from the enrolled agent within 60 s; agent log:\n%s", agentCmd.Stderr)
		}
	}
	list := run(append([]string{"agents", "list"}, cli...)...)
	if !strings.Contains(list, "edge-enrolled") || !strings.Contains(list, "bootstrap") {
		t.Fatalf("agents list:\n%s", list)
	}

	run(append([]string{"agents", "revoke", "edge-enrolled"}, cli...)...)
	if list := run(append([]string{"agents", "list"}, cli...)...); !strings.Contains(list, "revoked") {
		t.Fatalf("agents list after revoke:\n%s", list)
	}
	opens("revoked", 3)
	time.Sleep(3 * time.Second)
	if arrived(filepath.Join(markers, "revoked-3")) {
		t.Fatal("a revoked agent's events were accepted")
	}
	run(append([]string{"agents", "unrevoke", "edge-enrolled"}, cli...)...)
	testenv.WaitFor(t, 60*time.Second, "what the agent spooled while revoked", func() bool {
		return arrived(filepath.Join(markers, "revoked-3"))
	})
}

func caClient(t *testing.T, caFile string) *http.Client {
	t.Helper()
	b, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}
