package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/api"
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
			e := newEdgeNode(t, "edge-response-"+mode)
			policy := filepath.Join(e.dir, "response.yaml")
			if err := os.WriteFile(policy, []byte(fmt.Sprintf(`apiVersion: harrier.io/v1
kind: ResponsePolicies
policies:
  - name: marker-%s
    mode: %s
    match: {detections: [test-alert], where: host}
    actions: [kill-process-tree]
`, mode, mode)), 0o600); err != nil {
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

			// The marker's shell, with two children of its own.
			tree := exec.Command("sh", "-c", "echo HARRIER-TEST-ALERT >/dev/null; sleep 300 & sleep 301 & wait")
			start := time.Now()
			if err := tree.Start(); err != nil {
				t.Fatal(err)
			}
			ended := make(chan error, 1)
			go func() { ended <- tree.Wait() }()
			t.Cleanup(func() { _ = tree.Process.Kill() })

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
					if protojson.Unmarshal(raw, ev) == nil && ev.GetProcess().GetTgid() == uint32(tree.Process.Pid) {
						resp = ev.GetResponse()
						return true
					}
				}
				return false
			})
			t.Logf("%s: %+v", mode, resp)
			if resp.GetPolicy() != "marker-"+mode || resp.GetAction() != "kill-process-tree" || resp.GetMode() != mode ||
				resp.GetDetectionId() != "test-alert" || resp.GetAlertId() == "" {
				t.Errorf("response record %+v", resp)
			}
			switch mode {
			case "enforce":
				if resp.GetOutcome() != "done" || len(resp.GetPids()) != 3 || resp.GetPids()[0] != uint32(tree.Process.Pid) {
					t.Errorf("enforce: outcome %q, pids %v; want done and the shell with its two children", resp.GetOutcome(), resp.GetPids())
				}
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
