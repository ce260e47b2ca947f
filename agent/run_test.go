package agent

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/transport"
)

// TestRunReadyThenStop runs the whole pipeline (no backend answers): ready
// comes once the sensor is attached, the metrics server's /readyz says so,
// and cancelling ctx ends Run without an error and without a goroutine left
// behind (TestMain checks).
func TestRunReadyThenStop(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	if _, _, err := transport.InitCA(pki); err != nil {
		t.Fatal(err)
	}
	if err := transport.IssueAgentCert(pki, "node-a", "agent"); err != nil {
		t.Fatal(err)
	}
	metricsAddr := testenv.FreeAddr(t)
	cfg := Config{DataDir: dir, MetricsAddr: metricsAddr, Uplink: UplinkConfig{AgentID: "node-a", Addr: "127.0.0.1:9"}}
	cfg.Sensor.WatchPaths = []string{dir + "/"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, "test", slog.New(slog.DiscardHandler), func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not ready within 30 s")
	}
	// The metrics server starts in its own goroutine: poll until it answers.
	var code int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + metricsAddr + "/readyz")
		if err != nil {
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if code = resp.StatusCode; code == http.StatusOK {
			break
		}
	}
	if code != http.StatusOK {
		t.Errorf("agent /readyz after ready: %d, want 200", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30 s of cancel")
	}
	http.DefaultClient.CloseIdleConnections()
}
