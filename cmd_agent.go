package main

import (
	"context"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/harrier-sec/harrier/agent"
)

func newAgentCommand() *cobra.Command {
	var f serviceFlags
	var backendAddr, node string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Node agent: sensor, spool and QUIC uplink to a backend (root)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.serve(cmd, func(ctx context.Context, log *slog.Logger) error {
				cfg, err := loadFile(f.configPath, agent.LoadConfig)
				if err != nil {
					return err
				}
				if f.dataDir != "" {
					cfg.DataDir = f.dataDir
				}
				if backendAddr != "" {
					cfg.Uplink.Addr = backendAddr
				}
				if node != "" {
					cfg.Sensor.Node = node
				}
				return agent.Run(ctx, cfg, version, log, func() { notifyReady(log) })
			})
		},
	}
	f.register(cmd, "spool, state and certificates", agent.DefaultDataDir)
	cmd.Flags().StringVar(&backendAddr, "backend", "", "backend QUIC address host:port (default 127.0.0.1:9471)")
	// In a DaemonSet the host name is the pod's; the chart passes the
	// Kubernetes node name here, which also picks the node's certificate
	// (agent.certsSecret). The agent ID is the certificate's.
	cmd.Flags().StringVar(&node, "node", "", "node name for events, and the ID a bootstrap enrollment asks for (default: host name)")
	return cmd
}
