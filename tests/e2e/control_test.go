package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/internal/procstat"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// daemon is a harrier process a test stops and starts again.
type daemon struct {
	bin  string
	args []string
	cmd  *exec.Cmd
	logs *testenv.Buffer
}

func startRestartable(t *testing.T, bin string, args ...string) *daemon {
	t.Helper()
	d := &daemon{bin: bin, args: args}
	d.start(t)
	t.Cleanup(func() { d.stop(t) })
	return d
}

func (d *daemon) start(t *testing.T) {
	t.Helper()
	d.cmd = exec.Command(d.bin, d.args...)
	d.logs = &testenv.Buffer{}
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
}

// stop ends the process with SIGINT, as systemd or the kubelet would.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- d.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s %s: %v\n%s", d.bin, d.args[0], err, d.logs.String())
		}
	case <-time.After(15 * time.Second):
		_ = d.cmd.Process.Kill()
		t.Errorf("%s %s did not stop on SIGINT\n%s", d.bin, d.args[0], d.logs.String())
	}
	d.cmd = nil
}

// send makes an API request with token and decodes the answer into out.
func send(t *testing.T, method, url, token, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, url, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode
}

type commandJSON struct {
	ID        string   `json:"id"`
	State     string   `json:"state"`
	Error     string   `json:"error"`
	PIDs      []uint32 `json:"pids"`
	LatencyMS float64  `json:"latency_ms"`
}

// processTarget is the target JSON of a live process: its PID and start
// time, as an alert gives them.
func processTarget(t *testing.T, pid int) string {
	t.Helper()
	st, err := procstat.Read("/proc", pid)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := procstat.BootTime()
	if err != nil {
		t.Fatal(err)
	}
	start, _ := boot.Add(st.SinceBoot()).MarshalJSON()
	return fmt.Sprintf(`{"pid": %d, "start_time": %s}`, pid, start)
}

// startSleeper starts a process to act on; it is killed at cleanup if
// still running.
func startSleeper(t *testing.T) (*exec.Cmd, <-chan error) {
	t.Helper()
	p := exec.Command("sleep", strconv.Itoa(1000+int(time.Now().UnixNano()%9000)))
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- p.Wait() }()
	t.Cleanup(func() { _ = p.Process.Kill() })
	return p, ended
}

func killedBySIGKILL(t *testing.T, ended <-chan error) {
	t.Helper()
	select {
	case err := <-ended:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("the process ended with %v, want SIGKILL", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the process is still running")
	}
}

// TestResponseFromBackend: response policies and analysts' commands reach a
// real agent from a real backend over the QUIC control channel. The backend's
// policies take effect on the agent (a marker's shell is killed by a policy
// the agent never had in its own config) and survive an agent restart; a
// command kills a process; a command issued while the agent is down, with
// the backend restarted in between, is carried out when the agent comes
// back; one that expired meanwhile is not; pause and resume act on a real
// cgroup; and only the response token may ask.
func TestResponseFromBackend(t *testing.T) {
	testenv.RequireRoot(t)
	e := writeEdgeNode(t, "edge-control")
	backend := startRestartable(t, e.bin, "backend", "-c", e.backendCfg)
	agent := startRestartable(t, e.bin, "agent", "-c", e.agentCfg)
	waitReadyz(t, "http://"+e.agentMetrics+"/readyz")
	base := "http://" + e.api + "/api/v1/response"
	tokenBytes, err := os.ReadFile(filepath.Join(e.dir, "backend", "response-token"))
	if err != nil {
		t.Fatal(err)
	}
	respTok := strings.TrimSpace(string(tokenBytes))

	// Only the response token changes policies; a bad file is refused
	// with the reason and changes nothing.
	policies := `apiVersion: harrier.io/v1
kind: ResponsePolicies
policies:
  - name: from-backend
    mode: enforce
    match: {detections: [test-alert], where: host}
    actions: [kill-process-tree]
`
	var errOut struct {
		Error string `json:"error"`
	}
	if code := send(t, http.MethodPut, base+"/policies", "t", policies, &errOut); code != http.StatusForbidden {
		t.Errorf("PUT policies with the API token: %d %s, want 403", code, errOut.Error)
	}
	if code := send(t, http.MethodPut, base+"/policies", respTok, "apiVersion: harrier.io/v1\nkind: ResponsePolicies\npolicies: [{name: x, mode: sometimes, actions: [kill-process-tree], match: {minSeverity: HIGH}}]\n", &errOut); code != http.StatusBadRequest || !strings.Contains(errOut.Error, "mode") {
		t.Errorf("PUT a bad policy file: %d %q, want 400 naming the mode", code, errOut.Error)
	}
	var put struct {
		Policies struct {
			Version uint64 `json:"version"`
		} `json:"policies"`
	}
	if code := send(t, http.MethodPut, base+"/policies", respTok, policies, &put); code != http.StatusOK || put.Policies.Version != 1 {
		t.Fatalf("PUT policies: %d, version %d; want 200, version 1", code, put.Policies.Version)
	}
	appliedVersion := func() (uint64, string) {
		var out struct {
			Agents map[string]struct {
				PoliciesVersion uint64 `json:"policies_version"`
				PoliciesError   string `json:"policies_error"`
			} `json:"agents"`
		}
		send(t, http.MethodGet, base+"/policies", "t", "", &out)
		a := out.Agents["edge-control"]
		return a.PoliciesVersion, a.PoliciesError
	}
	testenv.WaitFor(t, 20*time.Second, "the agent applies version 1", func() bool { v, _ := appliedVersion(); return v == 1 })

	// The backend's policy acts: the marker's shell is killed.
	tree := exec.Command("sh", "-c", "echo HARRIER-TEST-ALERT >/dev/null; exec sleep 3000")
	if err := tree.Start(); err != nil {
		t.Fatal(err)
	}
	treeEnded := make(chan error, 1)
	go func() { treeEnded <- tree.Wait() }()
	t.Cleanup(func() { _ = tree.Process.Kill() })
	resp := e.responseFor(t, uint32(tree.Process.Pid))
	if resp.GetPolicy() != "from-backend" || resp.GetOutcome() != "done" {
		t.Errorf("the backend's policy: record %+v, want policy from-backend, done", resp)
	}
	killedBySIGKILL(t, treeEnded)

	// A command kills a process: accepted at once, done within seconds.
	sleeper, sleeperEnded := startSleeper(t)
	body := fmt.Sprintf(`{"agent_id": "edge-control", "action": "kill-process-tree", "target": %s, "reason": "e2e"}`, processTarget(t, sleeper.Process.Pid))
	if code := send(t, http.MethodPost, base+"/commands", "t", body, &errOut); code != http.StatusForbidden {
		t.Errorf("POST a command with the API token: %d, want 403", code)
	}
	var issued struct {
		Command commandJSON `json:"command"`
	}
	if code := send(t, http.MethodPost, base+"/commands", respTok, body, &issued); code != http.StatusAccepted || issued.Command.State != "pending" {
		t.Fatalf("POST a command: %d %+v", code, issued.Command)
	}
	asked := time.Now()
	waitCommand := func(id, want string) commandJSON {
		t.Helper()
		var got struct {
			Command commandJSON `json:"command"`
		}
		testenv.WaitFor(t, 30*time.Second, "command "+id+" "+want, func() bool {
			send(t, http.MethodGet, base+"/commands/"+id, "t", "", &got)
			return got.Command.State != "pending"
		})
		if got.Command.State != want {
			t.Errorf("command %s: %+v, want state %s", id, got.Command, want)
		}
		return got.Command
	}
	done := waitCommand(issued.Command.ID, "done")
	t.Logf("command answered %s after the request (%.1f ms at the agent from issue to action)", time.Since(asked).Round(time.Millisecond), done.LatencyMS)
	if len(done.PIDs) == 0 || done.PIDs[0] != uint32(sleeper.Process.Pid) {
		t.Errorf("command killed %v, want %d first", done.PIDs, sleeper.Process.Pid)
	}
	killedBySIGKILL(t, sleeperEnded)

	// A wrong target is refused at the API: no process action without its
	// start time.
	if code := send(t, http.MethodPost, base+"/commands", respTok, `{"agent_id": "edge-control", "action": "kill-process-tree", "target": {"pid": 1}}`, &errOut); code != http.StatusBadRequest || !strings.Contains(errOut.Error, "start_time") {
		t.Errorf("command without a start time: %d %q, want 400", code, errOut.Error)
	}

	// The agent is down; a command is issued; the backend restarts; the
	// agent comes back and carries it out. Another, expired meanwhile, is
	// not.
	agent.stop(t)
	later, laterEnded := startSleeper(t)
	body = fmt.Sprintf(`{"agent_id": "edge-control", "action": "kill-process-tree", "target": %s}`, processTarget(t, later.Process.Pid))
	if code := send(t, http.MethodPost, base+"/commands", respTok, body, &issued); code != http.StatusAccepted {
		t.Fatalf("POST while the agent is down: %d", code)
	}
	laterID := issued.Command.ID
	spared, sparedEnded := startSleeper(t)
	body = fmt.Sprintf(`{"agent_id": "edge-control", "action": "kill-process-tree", "target": %s, "expires_in": "1s"}`, processTarget(t, spared.Process.Pid))
	if code := send(t, http.MethodPost, base+"/commands", respTok, body, &issued); code != http.StatusAccepted {
		t.Fatalf("POST a short-lived command: %d", code)
	}
	expiringID := issued.Command.ID
	backend.stop(t)
	time.Sleep(1500 * time.Millisecond) // past the short command's expiry
	backend.start(t)
	agent.start(t)
	waitReadyz(t, "http://"+e.agentMetrics+"/readyz")
	waitCommand(laterID, "done")
	killedBySIGKILL(t, laterEnded)
	waitCommand(expiringID, "expired")
	select {
	case err := <-sparedEnded:
		t.Errorf("the expired command's target ended: %v", err)
	default:
	}

	// The restarted agent kept the backend's policies (it says so in its
	// heartbeat) without being sent them again.
	testenv.WaitFor(t, 30*time.Second, "the heartbeat names the backend's policies", func() bool {
		var out struct {
			Agents []struct {
				AgentID string `json:"agent_id"`
				Health  struct {
					Source  string `json:"response_policies_source"`
					Version string `json:"response_policies_version"`
				} `json:"health"`
			} `json:"agents"`
		}
		getJSON(t, "http://"+e.api+"/api/v1/agents", "t", &out)
		for _, a := range out.Agents {
			if a.AgentID == "edge-control" && a.Health.Source == "backend" && a.Health.Version == "1" {
				return true
			}
		}
		return false
	})
	if !bytes.Contains([]byte(agent.logs.String()), []byte("the backend (kept on disk)")) {
		t.Error("the restarted agent did not load the backend's policies from its data directory")
	}

	// Pause and resume a cgroup (a container's, as the sensor reports it).
	v2 := "/sys/fs/cgroup/unified"
	if _, err := os.Stat(filepath.Join(v2, "cgroup.procs")); err != nil {
		v2 = "/sys/fs/cgroup"
	}
	rel := fmt.Sprintf("/harrier-e2e-control-%d", os.Getpid())
	cg := filepath.Join(v2, rel)
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(cg) })
	inCg := exec.Command("sh", "-c", "echo $$ > "+cg+"/cgroup.procs && exec sleep 300")
	if err := inCg.Start(); err != nil {
		t.Fatal(err)
	}
	inCgEnded := make(chan error, 1)
	go func() { inCgEnded <- inCg.Wait() }()
	t.Cleanup(func() {
		_ = os.WriteFile(filepath.Join(cg, "cgroup.freeze"), []byte("0"), 0)
		_ = inCg.Process.Kill()
		<-inCgEnded
	})
	testenv.WaitFor(t, 5*time.Second, "the process in its cgroup", func() bool {
		b, _ := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
		return len(b) > 0
	})
	frozen := func() bool {
		b, _ := os.ReadFile(filepath.Join(cg, "cgroup.events"))
		return strings.Contains(string(b), "frozen 1")
	}
	for _, step := range []struct {
		action string
		frozen bool
	}{{"pause-container", true}, {"resume-container", false}} {
		body := fmt.Sprintf(`{"agent_id": "edge-control", "action": %q, "target": {"container_id": "e2e", "cgroup": %q}}`, step.action, rel)
		if code := send(t, http.MethodPost, base+"/commands", respTok, body, &issued); code != http.StatusAccepted {
			t.Fatalf("POST %s: %d", step.action, code)
		}
		waitCommand(issued.Command.ID, "done")
		if frozen() != step.frozen {
			t.Errorf("after %s: frozen %v, want %v", step.action, frozen(), step.frozen)
		}
	}

	// The same through the CLI: push a new version, then kill a process
	// and wait for the outcome.
	policyFile := filepath.Join(e.dir, "policies-v2.yaml")
	if err := os.WriteFile(policyFile, []byte(policies), 0o600); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(e.dir, "backend", "response-token")
	out, err := exec.Command(e.bin, "response", "push", policyFile, "--api", "http://"+e.api, "--token-file", tokenFile).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "version 2:") {
		t.Errorf("harrier response push: %v %s", err, out)
	}
	viaCLI, viaCLIEnded := startSleeper(t)
	st, err := procstat.Read("/proc", viaCLI.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	boot, err := procstat.BootTime()
	if err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(e.bin, "response", "act", "kill-process-tree", "--agent", "edge-control",
		"--pid", strconv.Itoa(viaCLI.Process.Pid), "--start-time", boot.Add(st.SinceBoot()).Format(time.RFC3339Nano),
		"--reason", "cli", "--api", "http://"+e.api, "--token-file", tokenFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"state":"done"`) {
		t.Errorf("harrier response act: %v %s", err, out)
	}
	killedBySIGKILL(t, viaCLIEnded)
	testenv.WaitFor(t, 20*time.Second, "the agent applies version 2", func() bool { v, _ := appliedVersion(); return v == 2 })
}
