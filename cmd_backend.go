package main

import (
	"context"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/harrier-sec/harrier/backend"
)

func newBackendCommand() *cobra.Command {
	var f serviceFlags
	var apiAddr, ingestAddr string
	cmd := &cobra.Command{
		Use:   "backend",
		Short: "Receive agents over QUIC; serve the alert API and web UI",
		Long: `Runs the backend: QUIC ingest from agents, the store, the API and web UI.
The config file holds dataDir and the backend section (backend:).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.serve(cmd, func(ctx context.Context, log *slog.Logger) error {
				file, err := loadFile(f.configPath, backend.LoadConfig)
				if err != nil {
					return err
				}
				if f.dataDir != "" {
					file.DataDir = f.dataDir
				}
				cfg := file.Resolved()
				if apiAddr != "" {
					cfg.APIAddr = apiAddr
				}
				if ingestAddr != "" {
					cfg.IngestAddr = ingestAddr
				}
				svc, err := backend.NewService(cfg, log)
				if err != nil {
					return err
				}
				// NewService has opened the store and bound both listeners,
				// so agents and API clients can connect from here on.
				notifyReady(log)
				return svc.Run(ctx)
			})
		},
	}
	f.register(cmd, "the store, certificates and API token", backend.DefaultDataDir)
	cmd.Flags().StringVar(&apiAddr, "api-addr", "", "API and web UI address (default 127.0.0.1:9470)")
	cmd.Flags().StringVar(&ingestAddr, "ingest-addr", "", "QUIC ingest address (default 127.0.0.1:9471; use :9471 for remote agents)")
	return cmd
}
