package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/harrier-sec/harrier/agent"
	"github.com/harrier-sec/harrier/allinone"
)

func newRunCommand() *cobra.Command {
	var f serviceFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "All-in-one: sensor, spool and an embedded backend with its web UI on this node (root)",
		Long: `Runs the agent (sensor → spool → QUIC uplink) and an embedded backend in one process,
connected over real QUIC on loopback. Certificates are made on first start under <data-dir>/pki;
the API token is written to <data-dir>/api-token. Open the printed URL in a browser and sign in as
the user api-token with that token as the password; add users with "harrier backend users add".
The config file holds the agent's sections and the backend's (backend:).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.serve(cmd, func(ctx context.Context, log *slog.Logger) error {
				cfg, err := loadFile(f.configPath, allinone.LoadConfig)
				if err != nil {
					return err
				}
				if f.dataDir != "" {
					cfg.DataDir = f.dataDir
				}
				scheme := "http"
				if cfg.Backend.APITLS {
					scheme = "https"
				}
				return allinone.Run(ctx, cfg, version, log, func(apiAddr string) {
					tokenFile := cfg.WithDefaults().Backend.TokenFile()
					fmt.Fprintf(cmd.OutOrStdout(), "Harrier is running: web UI and API at %s://%s/ (token in %s)\n",
						scheme, apiAddr, tokenFile)
					fmt.Fprintf(cmd.OutOrStdout(), "Sign in as the user api-token with that token as the password (break glass), then add users: "+
						"harrier backend users add NAME --role analyst --api %s://%s --token-file %s\n", scheme, apiAddr, tokenFile)
					notifyReady(log)
				})
			})
		},
	}
	f.register(cmd, "spool, state, the backend's store, certificates and API token", agent.DefaultDataDir)
	return cmd
}
