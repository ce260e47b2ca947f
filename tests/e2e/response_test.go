package e2e

import (
	"context"
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

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/runctest"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestResponseKillsProcessTree: a real agent with a response policy kills
// the process tree of an alert's process in enforce mode, and only records
// what it would have done in audit mode; each action reaches the backend
// as an event of kind response.
func TestResponseKillsProcessTree(t *testing.T) {
	testenv.RequireRoot(t)
	for _, mode := range []string{"enforce", "audit"} {
		t.Run(mode, func(t *testing.T) {
			e := startResponseNode(t, "edge-response-"+mode, fmt.Sprintf(`policies:
  - name: marker-%s
    mode: %s
    match: {detections: [test-alert], where: host}
    actions: [kill-process-tree]
`, mode, mode))

			// The marker's shell, with two children of its own.
			// Sleeps of their own length, to find them by command line.
			long := strconv.Itoa(3000 + int(time.Now().UnixNano()%5000))
			tree := exec.Command("sh", "-c", "sleep "+long+"1 & sleep "+long+"2 & echo HARRIER-TEST-ALERT >/dev/null; wait")
			tree.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			start := time.Now()
			if err := tree.Start(); err != nil {
				t.Fatal(err)
			}
			ended := make(chan error, 1)
			go func() { ended <- tree.Wait() }()
			t.Cleanup(func() { _ = syscall.Kill(-tree.Process.Pid, syscall.SIGKILL) })

			resp := e.responseFor(t, uint32(tree.Process.Pid))
			t.Logf("%s: %+v", mode, resp)
			if resp.GetPolicy() != "marker-"+mode || resp.GetAction() != "kill-process-tree" || resp.GetMode() != mode ||
				resp.GetDetectionId() != "test-alert" || resp.GetAlertId() == "" {
				t.Errorf("response record %+v", resp)
			}
			switch mode {
			case "enforce":
				if resp.GetOutcome() != "done" || len(resp.GetPids()) == 0 || resp.GetPids()[0] != uint32(tree.Process.Pid) {
					t.Errorf("enforce: outcome %q, pids %v; want done, the shell first", resp.GetOutcome(), resp.GetPids())
				}
				// The shell's children, whether it had forked them before the
				// kill or not: none may be left running.
				testenv.WaitFor(t, 5*time.Second, "no child of the killed shell left", func() bool {
					out, _ := exec.Command("pgrep", "-f", "^sleep "+long+"[12]$").Output()
					return len(out) == 0
				})
				select {
				case err := <-ended:
					var ee *exec.ExitError
					if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
						t.Errorf("the shell ended with %v, want SIGKILL", err)
					}
					t.Logf("enforce: killed %s after the marker ran; the record says %d µs from the behaviour", time.Since(start).Round(time.Millisecond), resp.GetLatencyUs())
				case <-time.After(10 * time.Second):
					t.Error("enforce: the shell is still running")
				}
			case "audit":
				if resp.GetOutcome() != "audited" {
					t.Errorf("audit: outcome %q, want audited", resp.GetOutcome())
				}
				select {
				case err := <-ended:
					t.Errorf("audit: the shell ended (%v); audit must not act", err)
				case <-time.After(2 * time.Second):
				}
			}
		})
	}
}

// startResponseNode starts an agent and its backend with a response policy
// file holding policies (YAML after the file's kind line).
func startResponseNode(t *testing.T, agentID, policies string) *edgeNode {
	t.Helper()
	e := newEdgeNode(t, agentID)
	policy := filepath.Join(e.dir, "response.yaml")
	if err := os.WriteFile(policy, []byte("apiVersion: harrier.io/v1\nkind: ResponsePolicies\n"+policies), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(e.agentCfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(f, "response:\n  policyFile: %s\n", policy)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	startDaemon(t, e.bin, "agent", "-c", e.agentCfg)
	waitReadyz(t, "http://"+e.agentMetrics+"/readyz")
	return e
}

// responseFor waits for the backend's response record about process tgid.
func (e *edgeNode) responseFor(t *testing.T, tgid uint32) *api.Response {
	t.Helper()
	return e.response(t, func(ev *api.Event) bool { return ev.GetProcess().GetTgid() == tgid })
}

// response waits for the first response record at the backend that match
// accepts.
func (e *edgeNode) response(t *testing.T, match func(*api.Event) bool) *api.Response {
	t.Helper()
	var resp *api.Response
	testenv.WaitFor(t, 30*time.Second, "the response record at the backend", func() bool {
		var out struct {
			Events []json.RawMessage `json:"events"`
		}
		if _, err := tryGetJSON("http://"+e.api+"/api/v1/events?kind=response&limit=100", "t", &out); err != nil {
			return false
		}
		for _, raw := range out.Events {
			ev := &api.Event{}
			if protojson.Unmarshal(raw, ev) == nil && match(ev) {
				resp = ev.GetResponse()
				return true
			}
		}
		return false
	})
	return resp
}

// TestResponseKillAtExec: a real agent with an execDeny list kills a
// listed program before its first instruction, whose first action would be
// to write a file: the file never appears, and the backend has the record.
func TestResponseKillAtExec(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	marker := filepath.Join(dir, "marker")
	touch, err := exec.LookPath("touch")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(touch)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(marker, b, 0o755); err != nil {
		t.Fatal(err)
	}
	e := startResponseNode(t, "edge-kill-at-exec", fmt.Sprintf(`execDeny:
  - name: attack-tools
    mode: enforce
    paths: [%s]
`, marker))
	wrote := filepath.Join(dir, "marker-wrote")
	cmd := exec.Command(marker, wrote)
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("the listed program ended with %v, want SIGKILL", err)
	}
	if _, err := os.Stat(wrote); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the listed program ran its first instruction: %s exists (%v)", wrote, err)
	}
	resp := e.responseFor(t, uint32(cmd.Process.Pid))
	if resp.GetAction() != "kill-at-exec" || resp.GetOutcome() != "done" || resp.GetPolicy() != "attack-tools" || resp.GetMode() != "enforce" {
		t.Errorf("record %+v, want kill-at-exec done by attack-tools", resp)
	}
}

// TestResponseBlockNetwork: a real agent blocks the network of a real
// container when an alert comes from it: before, the container reaches its
// own loopback web server; after the marker ran in it, the same request
// fails with EPERM, and the backend has the record naming the cgroup.
func TestResponseBlockNetwork(t *testing.T) {
	testenv.RequireRoot(t)
	runctest.Require(t)
	e := startResponseNode(t, "edge-block-network", `policies:
  - name: isolate-on-marker
    mode: enforce
    match: {detections: [test-alert], where: container}
    actions: [block-network]
`)
	c := runctest.Start(t, runctest.Options{Args: []string{"/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/"}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fetch := func() string {
		out, err := c.Exec(ctx, "/bin/busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/")
		return fmt.Sprintf("%s %v", out, err)
	}
	testenv.WaitFor(t, 10*time.Second, "the container's web server answering", func() bool {
		out := fetch()
		return !strings.Contains(out, "can't connect")
	})
	if _, err := c.Exec(ctx, "/bin/busybox", "sh", "-c", "echo HARRIER-TEST-ALERT"); err != nil {
		t.Fatal(err)
	}
	resp := e.response(t, func(ev *api.Event) bool { return ev.GetContainer().GetId() == c.ID })
	if resp.GetAction() != "block-network" || resp.GetOutcome() != "done" || !strings.HasSuffix(resp.GetTarget(), "/"+c.ID) {
		t.Fatalf("record %+v, want block-network done on the container's cgroup", resp)
	}
	if out := fetch(); !strings.Contains(out, "Operation not permitted") {
		t.Errorf("after the block the container still connects: %s", out)
	}
	t.Logf("blocked %s: %s", resp.GetTarget(), fetch())
}

// TestResponseCircuitBreaker: a real agent whose kill policy may act once a
// minute kills the first marker's shell, then trips its breaker on the
// second: that shell keeps running, the record says audited because the
// breaker is open, the trip is a record of its own and the agent's metric
// says the breaker is open.
func TestResponseCircuitBreaker(t *testing.T) {
	testenv.RequireRoot(t)
	e := startResponseNode(t, "edge-response-breaker", `policies:
  - name: marker
    mode: enforce
    match: {detections: [test-alert], where: host}
    actions: [kill-process-tree]
    rateLimit: {maxActionsPerMinute: 1, coolDown: 10m}
`)
	// Each marker runs from its own copy of sh: another executable is
	// another alert (the same one would only update the first).
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	shBytes, err := os.ReadFile(sh)
	if err != nil {
		t.Fatal(err)
	}
	marker := func() (*exec.Cmd, chan error) {
		copyPath := filepath.Join(t.TempDir(), "sh")
		if err := os.WriteFile(copyPath, shBytes, 0o755); err != nil {
			t.Fatal(err)
		}
		tree := exec.Command(copyPath, "-c", "echo HARRIER-TEST-ALERT >/dev/null; sleep 300")
		tree.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := tree.Start(); err != nil {
			t.Fatal(err)
		}
		ended := make(chan error, 1)
		go func() { ended <- tree.Wait() }()
		t.Cleanup(func() { _ = syscall.Kill(-tree.Process.Pid, syscall.SIGKILL) })
		return tree, ended
	}
	first, firstEnded := marker()
	if resp := e.responseFor(t, uint32(first.Process.Pid)); resp.GetOutcome() != "done" || resp.GetMode() != "enforce" {
		t.Fatalf("first marker: %+v, want enforced", resp)
	}
	select {
	case <-firstEnded:
	case <-time.After(10 * time.Second):
		t.Fatal("the first marker's shell still runs")
	}

	second, secondEnded := marker()
	resp := e.responseFor(t, uint32(second.Process.Pid))
	if resp.GetOutcome() != "audited" || resp.GetMode() != "audit" || !strings.Contains(resp.GetError(), "circuit breaker open until") {
		t.Errorf("second marker: %+v, want audited under the open breaker", resp)
	}
	trip := e.response(t, func(ev *api.Event) bool { return ev.GetResponse().GetAction() == "circuit-breaker" })
	if trip.GetOutcome() != "tripped" || trip.GetPolicy() != "marker" || !strings.Contains(trip.GetError(), "over the limit of 1") {
		t.Errorf("trip record %+v", trip)
	}
	select {
	case err := <-secondEnded:
		t.Errorf("the second marker's shell ended (%v) though the breaker was open", err)
	case <-time.After(time.Second):
	}
	got, err := http.Get("http://" + e.agentMetrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(got.Body)
	got.Body.Close()
	for _, want := range []string{`harrier_response_breaker_open{policy="marker"} 1`, `harrier_response_breaker_trips_total{policy="marker"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("agent metrics lack %s", want)
		}
	}
}
