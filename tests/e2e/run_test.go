package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// startRun starts `harrier run` with its API and ingest on free loopback
// ports (plus extra top-level YAML in its config) and returns the API base
// URL and the token.
func startRun(t *testing.T, bin, dataDir, extra string) (baseURL, token string) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "harrier.yaml")
	conf := fmt.Sprintf("dataDir: %s\nbackend:\n  apiAddr: 127.0.0.1:0\n  ingestAddr: 127.0.0.1:0\n", dataDir) + extra
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "run", "-c", cfg)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 10 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &strings.Builder{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		// A clean exit after SIGINT is reported as the context's error.
		if err := cmd.Wait(); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("harrier run exited: %v\n%s", err, logs.String())
		} else if t.Failed() {
			t.Logf("harrier run's log:\n%s", logs.String())
		}
	})
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-lines:
		m := regexp.MustCompile(`(http://[0-9.:]+)/ \(token in (\S+)\)`).FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("unexpected first line %q", line)
		}
		tok, err := os.ReadFile(m[2])
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(m[2])
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("token file %s mode %v, want 0600", m[2], st.Mode().Perm())
		}
		return m[1], strings.TrimSpace(string(tok))
	case <-time.After(30 * time.Second):
		t.Fatalf("harrier run did not come up:\n%s", logs.String())
	}
	return "", ""
}

func getJSON(t *testing.T, url, token string, out any) int {
	t.Helper()
	code, err := tryGetJSON(url, token, out)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// tryGetJSON is getJSON for a server that may not be up yet.
func tryGetJSON(url, token string, out any) (int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s: %w", url, err)
		}
	}
	return resp.StatusCode, nil
}

// TestRunAllInOne: the README's first command. Behaviour on this node must
// reach the embedded backend's API over the real QUIC uplink.
func TestRunAllInOne(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildHarrier(t)
	metricsAddr := testenv.FreeAddr(t)
	// Watching only what the test touches keeps the node's other activity (a
	// parallel Go build reads thousands of files under /root/) from crowding
	// the marker out of the raw-event cap.
	base, token := startRun(t, bin, t.TempDir(), "metricsAddr: "+metricsAddr+"\nsensor:\n  watchPaths: [/etc/shadow, /etc/gshadow]\n")

	if code := getJSON(t, base+"/api/v1/events", "", nil); code != http.StatusUnauthorized {
		t.Errorf("API without token: %d, want 401", code)
	}
	if code := getJSON(t, base+"/livez", "", nil); code != http.StatusOK {
		t.Errorf("livez: %d", code)
	}

	cat := exec.Command("cat", "/etc/shadow")
	if err := cat.Run(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var found *api.Event
	for found == nil && time.Now().Before(deadline) {
		var resp struct {
			Events []json.RawMessage `json:"events"`
		}
		getJSON(t, base+"/api/v1/events?kind=file_open&limit=1000", token, &resp)
		for _, raw := range resp.Events {
			ev := &api.Event{}
			if err := protojson.Unmarshal(raw, ev); err != nil {
				t.Fatalf("event JSON: %v", err)
			}
			if ev.GetProcess().GetTgid() == uint32(cat.Process.Pid) && ev.GetFileOpen().GetPath() == "/etc/shadow" {
				found = ev
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if found == nil {
		t.Fatal("the open of /etc/shadow never reached the backend")
	}
	if found.GetProcess().GetExe() == "" || len(found.GetAncestry()) == 0 {
		t.Errorf("event lost its process context on the way: %v", found)
	}

	// The node's analytics raise alerts, and they reach the backend.
	// The cat above read /etc/shadow: its alert is already on its way.
	shadowAlert := waitAlert(t, base, token, "sensitive-files", func(a *api.Alert) bool {
		return a.GetProcess().GetTgid() == uint32(cat.Process.Pid)
	})
	if shadowAlert.GetEvidence()[0].GetFileOpen().GetPath() != "/etc/shadow" {
		t.Errorf("sensitive-files evidence: %v", shadowAlert.GetEvidence())
	}
	for _, tc := range []struct {
		detection string
		cmd       *exec.Cmd
	}{
		{"test-alert", exec.Command("sh", "-c", "echo HARRIER-TEST-ALERT >/dev/null")},
	} {
		start := time.Now()
		if err := tc.cmd.Run(); err != nil {
			t.Fatal(err)
		}
		alert := waitAlert(t, base, token, tc.detection, func(a *api.Alert) bool {
			return a.GetProcess().GetTgid() == uint32(tc.cmd.Process.Pid)
		})
		t.Logf("%s: behaviour → alert at the backend in %v", tc.detection, time.Since(start).Round(time.Millisecond))
		if alert.GetName() == "" || alert.GetRemediation() == "" || len(alert.GetEvidence()) == 0 || alert.GetNode() == "" {
			t.Errorf("%s alert lacks context: %v", tc.detection, alert)
		}
	}

	// The agent's own metrics cover every stage.
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, re := range []string{
		`harrier_sensor_emitted_total [1-9]`, `harrier_sensor_queue_capacity [1-9]`, `harrier_sensor_queue_age_seconds [0-9]`, `harrier_sensor_kernel_events_total\{kind="exec"\} [1-9]`,
		`harrier_analytics_events_total [1-9]`, `harrier_analytics_alerts_total [2-9]`, `harrier_spool_appended_total\{class="alert"\} [1-9]`,
		`harrier_uplink_connected 1`, `harrier_uplink_records_acked_total [1-9]`, `go_goroutines`,
		// The test alert took well under 5 s from its exec to the spool.
		`harrier_alert_spool_latency_seconds_count [1-9]`, `harrier_alert_spool_latency_seconds_bucket\{le="5"\} [1-9]`,
	} {
		if !regexp.MustCompile(re).Match(metrics) {
			t.Errorf("agent /metrics lacks %s", re)
		}
	}

	var agents struct {
		Agents []struct {
			AgentID string `json:"agent_id"`
			Health  struct {
				Probes []struct {
					Name     string `json:"name"`
					Attached bool   `json:"attached"`
				} `json:"probes"`
			} `json:"health"`
		} `json:"agents"`
	}
	deadline = time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		getJSON(t, base+"/api/v1/agents", token, &agents)
		if len(agents.Agents) == 1 && len(agents.Agents[0].Health.Probes) > 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(agents.Agents) != 1 || len(agents.Agents[0].Health.Probes) == 0 {
		t.Fatalf("agents = %+v, want one with heartbeat health", agents)
	}

	req, _ := http.NewRequest(http.MethodGet, base+"/", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(strings.ToLower(string(body)), "harrier") {
		t.Errorf("web UI: %d %.200s", resp.StatusCode, body)
	}
}

// waitAlert polls the backend until an alert of the detection that match
// accepts arrives.
func waitAlert(t *testing.T, base, token, detection string, match func(*api.Alert) bool) *api.Alert {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var resp struct {
			Alerts []json.RawMessage `json:"alerts"`
		}
		getJSON(t, base+"/api/v1/alerts?detection="+detection, token, &resp)
		for _, raw := range resp.Alerts {
			a := &api.Alert{}
			if err := protojson.Unmarshal(raw, a); err != nil {
				t.Fatalf("alert JSON: %v", err)
			}
			if match(a) {
				return a
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	var all struct {
		Alerts []struct {
			Detection string `json:"detection_id"`
			Summary   string `json:"summary"`
			Process   struct {
				Tgid int `json:"tgid"`
			} `json:"process"`
		} `json:"alerts"`
	}
	getJSON(t, base+"/api/v1/alerts", token, &all)
	t.Fatalf("no matching %s alert reached the backend; alerts there: %+v", detection, all.Alerts)
	return nil
}

// startDaemon starts bin with args and stops it with SIGINT at cleanup.
func startDaemon(t *testing.T, bin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd, _ := startDaemonLogs(t, bin, args...)
	return cmd
}

// startDaemonLogs is startDaemon with the daemon's output readable while it
// runs.
func startDaemonLogs(t *testing.T, bin string, args ...string) (*exec.Cmd, *testenv.Buffer) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	logs := &testenv.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s %v: %v\n%s", bin, args[0], err, logs.String())
			}
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("%s %v did not stop on SIGINT\n%s", bin, args[0], logs.String())
		}
	})
	return cmd, logs
}

// spooledEvents reads harrier_spool_appended_total{class="event"} from the
// agent's metrics: records counted there are already fsynced.
func spooledEvents(t *testing.T, metricsAddr string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, false
	}
	m := regexp.MustCompile(`(?m)^harrier_spool_appended_total\{class="event"\} (\S+)$`).FindSubmatch(body)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	return v, err == nil
}

// waitSpooling opens files named prefix-N under dir until the agent's spool
// counts more events than it did before: the sensor is attached and the
// pipeline runs. A fixed sleep was not enough on every machine.
func waitSpooling(t *testing.T, metricsAddr, dir, prefix string) float64 {
	t.Helper()
	before, _ := spooledEvents(t, metricsAddr)
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%d", prefix, i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if n, ok := spooledEvents(t, metricsAddr); ok && n > before {
			return n
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the agent spooled no %s opens within 60 s", prefix)
	return 0
}

// waitSpooledPast waits until the agent's spool counts more than past
// events and returns the count; what names them for the failure.
func waitSpooledPast(t *testing.T, metricsAddr string, past float64, what string) float64 {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if n, ok := spooledEvents(t, metricsAddr); ok && n > past {
			return n
		}
	}
	t.Fatalf("%s: not spooled within 30 s", what)
	return 0
}
func checkServingCert(t *testing.T, dir, name string, hosts ...string) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: h}); err != nil {
			t.Errorf("%s certificate for %s: %v", name, h, err)
		}
	}
}
