package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// TestReadyzThenAct does what a script does: wait for /readyz, act once at
// once, and expect the alert. /readyz answering before the sensor is
// attached (as the all-in-one's did, half a second early) loses the act.
func TestReadyzThenAct(t *testing.T) {
	testenv.RequireRoot(t)
	t.Run("run", func(t *testing.T) {
		bin := buildHarrier(t)
		dir := t.TempDir()
		apiAddr := testenv.FreeAddr(t)
		const token = "ready-test-token-0123456789abcdef"
		cfg := filepath.Join(dir, "harrier.yaml")
		conf := fmt.Sprintf("dataDir: %s\nmetricsAddr: \"off\"\nbackend:\n  apiAddr: %s\n  ingestAddr: 127.0.0.1:0\n  token: %s\n", dir, apiAddr, token)
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		startDaemon(t, bin, "run", "-c", cfg)
		base := "http://" + apiAddr
		waitReadyz(t, base+"/readyz")
		actOnceExpectAlert(t, base, token)
	})
	t.Run("agent", func(t *testing.T) {
		e := newEdgeNode(t, "edge-ready")
		startDaemon(t, e.bin, "agent", "-c", e.agentCfg)
		waitReadyz(t, "http://"+e.agentMetrics+"/readyz")
		actOnceExpectAlert(t, "http://"+e.api, "t")
	})
}

// waitReadyz polls url as a script would, every few milliseconds, until it
// answers 200.
func waitReadyz(t *testing.T, url string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		resp, err := http.Get(url)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return
		}
	}
	t.Fatalf("%s did not answer 200 within 60 s", url)
}

// actOnceExpectAlert runs the test-alert marker once and waits for its alert
// at the backend API.
func actOnceExpectAlert(t *testing.T, base, token string) {
	t.Helper()
	marker := exec.Command("sh", "-c", "echo HARRIER-TEST-ALERT >/dev/null")
	if err := marker.Run(); err != nil {
		t.Fatal(err)
	}
	waitAlert(t, base, token, "test-alert", func(a *api.Alert) bool {
		return a.GetProcess().GetTgid() == uint32(marker.Process.Pid)
	})
}
