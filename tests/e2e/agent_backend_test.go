package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestAgentSpoolsWhileBackendIsDown: separate agent and backend processes
// with certificates from `harrier certs`. Behaviour while the backend is
// down is spooled and delivered once it comes up.
func TestAgentSpoolsWhileBackendIsDown(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildHarrier(t)
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	for _, args := range [][]string{
		{"certs", "init", "--out", pki},
		{"certs", "backend", "--out", pki, "--host", "localhost", "--host", "127.0.0.1"},
		{"certs", "agent", "--out", pki, "edge-1"},
		{"certs", "webhook", "audit", "--out", pki, "--host", "10.96.0.250", "--host", "harrier-audit.harrier.svc"},
	} {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	if st, err := os.Stat(filepath.Join(pki, "edge-1.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("agent key: %v %v", st, err)
	}
	checkServingCert(t, pki, "audit", "harrier-audit.harrier.svc", "10.96.0.250")
	ingest, apiAddr, agentMetrics := testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)
	readyDir := filepath.Join(dir, "ready")
	if err := os.MkdirAll(readyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	agentCfg := filepath.Join(dir, "agent.yaml")
	// Only /etc/shadow and a directory of readiness markers are watched: the
	// node's other activity (a Go build reads thousands of watched files
	// under /root/) must not crowd the marker out of the raw-event cap or the
	// API's page.
	conf := fmt.Sprintf(`dataDir: %s/agent
metricsAddr: %s
sensor:
  watchPaths: [/etc/shadow, %s/]
spool:
  eventKinds: [file_open]
uplink:
  addr: %s
  agentID: edge-1
  caFile: %s/ca.crt
  certFile: %s/edge-1.crt
  keyFile: %s/edge-1.key
`, dir, agentMetrics, readyDir, ingest, pki, pki, pki)
	if err := os.WriteFile(agentCfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	backendCfg := filepath.Join(dir, "backend.yaml")
	conf = fmt.Sprintf(`dataDir: %s/backend
backend:
  apiAddr: %s
  ingestAddr: %s
  token: e2e-token
  caFile: %s/ca.crt
  certFile: %s/backend.crt
  keyFile: %s/backend.key
`, dir, apiAddr, ingest, pki, pki, pki)
	if err := os.WriteFile(backendCfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	startDaemon(t, bin, "agent", "-c", agentCfg)
	spooled := waitSpooling(t, agentMetrics, readyDir, "ready") // attached, backend unreachable
	cat := exec.Command("cat", "/etc/shadow")
	if err := cat.Run(); err != nil {
		t.Fatal(err)
	}
	waitSpooledPast(t, agentMetrics, spooled, "cat /etc/shadow")

	startDaemon(t, bin, "backend", "-c", backendCfg)
	base := "http://" + apiAddr
	deadline := time.Now().Add(60 * time.Second) // the agent's backoff is capped at 30 s
	for time.Now().Before(deadline) {
		var resp struct {
			Events []json.RawMessage `json:"events"`
		}
		if _, err := tryGetJSON(base+"/api/v1/events?kind=file_open&limit=1000", "e2e-token", &resp); err != nil {
			time.Sleep(500 * time.Millisecond) // the backend is still starting
			continue
		}
		for _, raw := range resp.Events {
			ev := &api.Event{}
			if err := protojson.Unmarshal(raw, ev); err != nil {
				t.Fatal(err)
			}
			if ev.GetProcess().GetTgid() == uint32(cat.Process.Pid) && ev.GetFileOpen().GetPath() == "/etc/shadow" {
				return
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatal("behaviour from while the backend was down never arrived")
}

// edgeNode is `harrier backend` running and `harrier agent`'s config, with
// certificates from `harrier certs`, the agent watching only markers/ and
// spooling its file opens.
type edgeNode struct {
	bin, dir, markers, agentCfg, backendCfg string
	api, agentMetrics                       string // addresses
}

// newEdgeNode writes an agent's and a backend's configuration and starts the
// backend.
func newEdgeNode(t *testing.T, agentID string) *edgeNode {
	t.Helper()
	e := writeEdgeNode(t, agentID)
	startDaemon(t, e.bin, "backend", "-c", e.backendCfg)
	return e
}

// writeEdgeNode writes the configurations and certificates only.
func writeEdgeNode(t *testing.T, agentID string) *edgeNode {
	t.Helper()
	e := &edgeNode{bin: buildHarrier(t), dir: t.TempDir()}
	pki := filepath.Join(e.dir, "pki")
	e.markers = filepath.Join(e.dir, "markers")
	if err := os.MkdirAll(e.markers, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"certs", "init", "--out", pki},
		{"certs", "backend", "--out", pki, "--host", "127.0.0.1"},
		{"certs", "agent", "--out", pki, agentID},
	} {
		if out, err := exec.Command(e.bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	var ingest string
	ingest, e.api, e.agentMetrics = testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)
	e.agentCfg = filepath.Join(e.dir, "agent.yaml")
	conf := fmt.Sprintf(`dataDir: %s/agent
metricsAddr: %s
sensor:
  watchPaths: [%s/]
spool:
  eventKinds: [file_open]
uplink:
  addr: %s
  serverName: 127.0.0.1
  agentID: %s
  caFile: %s/ca.crt
  certFile: %s/%s.crt
  keyFile: %s/%s.key
`, e.dir, e.agentMetrics, e.markers, ingest, agentID, pki, pki, agentID, pki, agentID)
	if err := os.WriteFile(e.agentCfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	e.backendCfg = filepath.Join(e.dir, "backend.yaml")
	conf = fmt.Sprintf("dataDir: %s/backend\nbackend:\n  apiAddr: %s\n  ingestAddr: %s\n  token: t\n  caFile: %s/ca.crt\n  certFile: %s/backend.crt\n  keyFile: %s/backend.key\n",
		e.dir, e.api, ingest, pki, pki, pki)
	if err := os.WriteFile(e.backendCfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// opens makes files prefix-1..prefix-n under markers/ (by a child: the agent
// ignores nothing but itself).
func (e *edgeNode) opens(t *testing.T, prefix string, n int) {
	t.Helper()
	script := fmt.Sprintf("for i in $(seq 1 %d); do : > %s/%s-$i; done", n, e.markers, prefix)
	if out, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
}

// arrived polls the backend's file-open events until last has arrived (or
// a minute has passed) and returns how often each path arrived.
func (e *edgeNode) arrived(t *testing.T, last string) map[string]int {
	t.Helper()
	var counts map[string]int
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		var resp struct {
			Events []json.RawMessage `json:"events"`
		}
		if _, err := tryGetJSON("http://"+e.api+"/api/v1/events?kind=file_open&limit=1000", "t", &resp); err != nil {
			continue
		}
		counts = map[string]int{}
		for _, raw := range resp.Events {
			ev := &api.Event{}
			if err := protojson.Unmarshal(raw, ev); err != nil {
				t.Fatal(err)
			}
			counts[ev.GetFileOpen().GetPath()]++
		}
		if counts[filepath.Join(e.markers, last)] > 0 {
			break
		}
	}
	return counts
}

// TestReinstalledAgentIsHeard: an agent whose data directory was wiped (a
// reinstall) numbers its records from 1 again; the backend must take them
// as new, not as repeats of what the old spool sent under the same numbers.
func TestReinstalledAgentIsHeard(t *testing.T) {
	testenv.RequireRoot(t)
	e := newEdgeNode(t, "edge-3")
	first := exec.Command(e.bin, "agent", "-c", e.agentCfg)
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	waitSpooling(t, e.agentMetrics, e.markers, "ready")
	e.opens(t, "old", 20)
	if got := e.arrived(t, "old-20"); got[filepath.Join(e.markers, "old-20")] != 1 {
		t.Fatalf("the first install's opens did not arrive: %v", got)
	}
	_ = first.Process.Signal(syscall.SIGINT)
	if err := first.Wait(); err != nil {
		t.Fatalf("the first install's agent: %v", err)
	}
	if err := os.RemoveAll(filepath.Join(e.dir, "agent")); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, e.bin, "agent", "-c", e.agentCfg)
	waitSpooling(t, e.agentMetrics, e.markers, "ready-again")
	e.opens(t, "new", 20)
	counts := e.arrived(t, "new-20")
	for i := 1; i <= 20; i++ {
		if c := counts[filepath.Join(e.markers, fmt.Sprintf("new-%d", i))]; c != 1 {
			t.Errorf("new-%d arrived %d times after the reinstall", i, c)
		}
	}
}

// TestAgentKill9LosesNothing kills the agent with SIGKILL while it uploads a
// burst, restarts it, and checks that every marker file open reaches the
// backend exactly once.
func TestAgentKill9LosesNothing(t *testing.T) {
	testenv.RequireRoot(t)
	e := newEdgeNode(t, "edge-2")
	bin, markers, agentCfg, agentMetrics := e.bin, e.markers, e.agentCfg, e.agentMetrics

	// The first agent: killed with SIGKILL in the middle of the burst, once
	// its spool has counted (so fsynced) some of the burst.
	first := exec.Command(bin, "agent", "-c", agentCfg)
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	ready := waitSpooling(t, agentMetrics, markers, "ready")
	const n = 600 // with the markers, within one page of the events API
	// Opens by a child: the agent ignores nothing but itself.
	script := fmt.Sprintf("for i in $(seq 1 %d); do : > %s/m-$i; done", n, markers)
	burst := exec.Command("sh", "-c", script)
	if err := burst.Start(); err != nil {
		t.Fatal(err)
	}
	spooled := waitSpooledPast(t, agentMetrics, ready+49, "50 of the burst")
	_ = first.Process.Kill()
	_ = first.Wait()
	if err := burst.Wait(); err != nil {
		t.Fatal(err)
	}
	// Records spooled before the kill must survive; opens made while no
	// agent ran are not the agent's to deliver, so redo the tail under the
	// restarted agent.
	startDaemon(t, bin, "agent", "-c", agentCfg)
	waitSpooling(t, agentMetrics, markers, "ready-again")
	e.opens(t, "again", 50)

	counts := e.arrived(t, "again-50")
	for path, c := range counts {
		if c != 1 {
			t.Errorf("%s arrived %d times", path, c)
		}
	}
	for i := 1; i <= 50; i++ {
		if counts[filepath.Join(markers, fmt.Sprintf("again-%d", i))] != 1 {
			t.Errorf("again-%d missing after the restart", i)
		}
	}
	burstSeen, readySeen := 0, 0
	for path := range counts {
		switch name := filepath.Base(path); {
		case strings.HasPrefix(name, "m-"):
			burstSeen++
		case strings.HasPrefix(name, "ready-") && !strings.HasPrefix(name, "ready-again-"):
			readySeen++
		}
	}
	// Everything the first agent's spool had counted before SIGKILL was
	// fsynced: the readiness markers and burst opens it counted must all
	// arrive after the restart.
	if got := float64(burstSeen + readySeen); got < spooled {
		t.Errorf("%v records were spooled before SIGKILL, only %v arrived (%d of the burst)", spooled, got, burstSeen)
	}
	t.Logf("burst opens delivered across the SIGKILL: %d of %d (the spool had counted %v records, %v of them before the burst; the rest of the burst came while no agent ran)", burstSeen, n, spooled, ready)
}

// checkServingCert verifies <name>.crt against the CA in dir for each host.
