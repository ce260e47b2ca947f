package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestAgentWithoutBTF: on a node whose kernel has no BTF (here: the agent
// in a mount namespace where /sys/kernel/btf is an empty tmpfs) the agent
// says why the sensor cannot run, keeps running what can — spool, uplink,
// heartbeats — and the backend shows the reason for that node.
func TestAgentWithoutBTF(t *testing.T) {
	testenv.RequireRoot(t)
	unshare := testenv.RequireCommand(t, "unshare", "util-linux")
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Fatalf("this test hides the kernel's BTF, which this kernel must have: %v", err)
	}
	e := newEdgeNode(t, "edge-nobtf")
	// exec: the agent gets the SIGINT that stops it.
	_, logs := startDaemonLogs(t, unshare, "--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs harrier-test-no-btf /sys/kernel/btf && exec "$0" agent -c "$1"`, e.bin, e.agentCfg)
	waitReadyz(t, "http://"+e.agentMetrics+"/readyz")

	if out := logs.String(); !strings.Contains(out, "sensor unavailable on this node") || !strings.Contains(out, "BTF") {
		t.Errorf("the agent's log does not say that the sensor cannot run for lack of BTF:\n%s", out)
	}
	resp, err := http.Get("http://" + e.agentMetrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), "\nharrier_sensor_up 0\n") {
		t.Errorf("metrics lack harrier_sensor_up 0")
	}
	// The uplink runs: the heartbeat reaches the backend with the reason.
	var reason string
	testenv.WaitFor(t, 30*time.Second, "the heartbeat with the sensor's reason at the backend", func() bool {
		var out struct {
			Agents []struct {
				AgentID string          `json:"agent_id"`
				Health  json.RawMessage `json:"health"`
			} `json:"agents"`
		}
		if _, err := tryGetJSON("http://"+e.api+"/api/v1/agents", "t", &out); err != nil {
			return false
		}
		for _, a := range out.Agents {
			var h struct {
				Probes []struct {
					Name     string `json:"name"`
					Attached bool   `json:"attached"`
					Error    string `json:"error"`
				} `json:"probes"`
			}
			if a.AgentID != "edge-nobtf" || json.Unmarshal(a.Health, &h) != nil {
				continue
			}
			for _, p := range h.Probes {
				if p.Name == "sensor" && !p.Attached {
					reason = p.Error
					return true
				}
			}
		}
		return false
	})
	if !strings.Contains(reason, "BTF") || !strings.Contains(reason, "CONFIG_DEBUG_INFO_BTF") {
		t.Errorf("the backend's reason for %s: %q, want the missing BTF and what to do", "edge-nobtf", reason)
	}
}
