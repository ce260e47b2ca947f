// Package allinone is `harrier run`: the agent and an embedded backend in
// one process on one node. It is the one package above both (agent does not
// know the backend); nothing but the command imports it.
package allinone

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/harrier-sec/harrier/agent"
	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/internal/confval"
	"github.com/harrier-sec/harrier/transport"
)

// Config is the file `harrier run -c` reads: the agent's sections and the
// embedded backend's (backend:) in one YAML. dataDir is shared: the
// backend's paths default under it as they do for `harrier backend`.
type Config struct {
	agent.Config
	Backend backend.Config `json:"backend"`
}

// Validate reports every problem with c at once.
func (c Config) Validate() error {
	err := c.Config.Validate()
	if berr := c.Backend.Validate(); berr != nil {
		err = errors.Join(err, fmt.Errorf("backend: %w", berr))
	}
	return err
}

// WithDefaults returns c with every unset path and address filled in.
func (c Config) WithDefaults() Config {
	c.Config = agent.WithDefaults(c.Config)
	c.Backend = c.Backend.InDataDir(c.DataDir)
	return c
}

// LoadConfig reads path strictly: unknown fields, wrong types and invalid
// values are errors that name the file and the problem.
func LoadConfig(path string) (Config, error) {
	var cfg Config
	err := confval.LoadYAML(path, &cfg)
	return cfg, err
}

// Run runs the agent and an embedded backend in one process on this node,
// connected over real QUIC on loopback with certificates it makes on first
// start under <dataDir>/pki, until ctx is done or either part fails. ready
// gets the API address once both are up; the API's /readyz answers ready
// from then on too.
func Run(ctx context.Context, cfg Config, version string, log *slog.Logger, ready func(apiAddr string)) error {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// The agent's certificate, made once, names uplink.agentID or the node;
	// from then on the certificate is the agent's identity.
	agentID := cfg.Uplink.AgentID
	if agentID == "" {
		agentID = cfg.Sensor.Node
	}
	if err := makeCerts(filepath.Join(cfg.DataDir, "pki"), agentID); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	svc, err := backend.NewService(cfg.Backend, log.With("part", "backend"))
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	// The embedded agent always talks to the embedded backend, wherever it
	// was bound (port 0 in tests).
	agentCfg := cfg.Config
	agentCfg.Uplink.Addr = svc.IngestAddr().String()
	// The API answers before the agent has attached its sensor; its
	// /readyz waits for the agent, so that what a script does once it
	// reads "ready" is seen.
	agentReady := make(chan struct{})
	svc.ReadyAfter(agentReady)

	// The agent stopping, even without an error, stops the backend.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return svc.Run(gctx) })
	g.Go(func() error {
		defer cancel()
		return agent.Run(gctx, agentCfg, version, log.With("part", "agent"), func() {
			close(agentReady)
			if ready != nil {
				ready(svc.APIAddr().String())
			}
		})
	})
	return g.Wait()
}

// makeCerts makes, unless they exist, the CA, the backend's serving
// certificate for loopback and the agent's certificate in dir.
func makeCerts(dir, agentID string) error {
	if _, _, err := transport.InitCA(dir); err != nil {
		return err
	}
	if err := transport.IssueBackendCert(dir, []string{"localhost", "127.0.0.1", "::1"}); err != nil {
		return err
	}
	return transport.IssueAgentCert(dir, agentID, "agent")
}
