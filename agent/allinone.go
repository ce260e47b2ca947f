package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/harrier-sec/harrier/backend"
)

// RunAllInOne runs the agent and an embedded backend in one process on this
// node, connected over real QUIC on loopback with certificates it makes on
// first start under <dataDir>/pki. ready gets the API address once both are
// up.
func RunAllInOne(ctx context.Context, cfg Config, version string, log *slog.Logger, ready func(apiAddr string)) error {
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	pki := filepath.Join(cfg.DataDir, "pki")
	_, _, err := InitCA(pki)
	if err == nil {
		err = IssueBackendCert(pki, []string{"localhost", "127.0.0.1", "::1"})
	}
	if err == nil {
		err = IssueAgentCert(pki, cfg.Uplink.AgentID, "agent")
	}
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	svc, err := backend.NewService(cfg.Backend, log.With("part", "backend"))
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	// The embedded agent always talks to the embedded backend, wherever it
	// was bound (port 0 in tests).
	cfg.Uplink.Addr = svc.IngestAddr().String()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var backendErr, agentErr error
	wg.Go(func() {
		if backendErr = svc.Run(ctx); backendErr != nil {
			cancel()
		}
	})
	wg.Go(func() {
		agentErr = Run(ctx, cfg, version, log.With("part", "agent"), func() {
			if ready != nil {
				ready(svc.APIAddr().String())
			}
		})
		cancel()
	})
	wg.Wait()
	return errors.Join(agentErr, backendErr)
}
