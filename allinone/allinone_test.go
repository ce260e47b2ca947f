package allinone

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/harrier-sec/harrier/internal/confval/confvaltest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestLoadConfig: `harrier run -c` reads the agent's sections and the
// backend's in one file, strictly, and puts the backend's paths under the
// shared dataDir.
func TestLoadConfig(t *testing.T) {
	confvaltest.CheckLoad(t, func(path string) error { _, err := LoadConfig(path); return err }, []confvaltest.Case{
		{Name: "empty", YAML: ""},
		{Name: "all sections", YAML: "dataDir: /x\nspool:\n  quotaBytes: 1000000\n  eventKinds: [exec]\nuplink:\n  addr: b:9471\nbackend:\n  apiAddr: 127.0.0.1:1\n"},
		{Name: "unknown field", YAML: "backend:\n  apiAdr: 127.0.0.1:1\n", Want: "apiAdr"},
		{Name: "unknown agent field", YAML: "uplink:\n  adress: b:9471\n", Want: "adress"},
		{Name: "bad address", YAML: "backend:\n  apiAddr: nowhere\n", Want: "apiAddr"},
		{Name: "bad event kind", YAML: "spool:\n  eventKinds: [exec, teleport]\n", Want: "teleport"},
	})
	var cfg Config
	cfg.DataDir = "/d"
	cfg = cfg.WithDefaults()
	if cfg.Uplink.CAFile != "/d/pki/ca.crt" || cfg.Backend.DataDir != "/d/backend" || cfg.Backend.TokenDir != "/d" ||
		cfg.Backend.CertFile != "/d/pki/backend.crt" || cfg.Backend.TokenFile() != "/d/api-token" {
		t.Errorf("defaults = %+v", cfg)
	}
}

// TestRunAgentFailsBackendStops: when the agent fails at start, Run stops the
// embedded backend it had started and returns the agent's error, leaving no
// goroutine behind (TestMain checks).
func TestRunAgentFailsBackendStops(t *testing.T) {
	var cfg Config
	cfg.DataDir = t.TempDir()
	cfg.Backend.APIAddr, cfg.Backend.IngestAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Uplink.CertFile = filepath.Join(cfg.DataDir, "no-such.crt")
	ready := false
	err := Run(context.Background(), cfg, "test", slog.New(slog.DiscardHandler), func(string) { ready = true })
	if err == nil || !strings.Contains(err.Error(), "uplink TLS") {
		t.Fatalf("Run = %v, want the agent's uplink TLS error", err)
	}
	if ready {
		t.Error("ready was called for an agent that never started")
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "pki", "backend.crt")); err != nil {
		t.Errorf("certificates not made: %v", err)
	}
}
