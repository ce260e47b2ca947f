package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/backend/export"
	"github.com/harrier-sec/harrier/backend/replicate"
)

func newBackendCommand() *cobra.Command {
	var f serviceFlags
	var apiAddr, ingestAddr string
	var clusterServers []string
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
				if len(clusterServers) > 0 {
					c := replicate.Config{}
					if cfg.Cluster != nil {
						c = *cfg.Cluster
					}
					c.Servers = clusterServers
					cfg.Cluster = &c
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
	cmd.Flags().StringSliceVar(&clusterServers, "cluster", nil, "run as one replica of several over these NATS JetStream servers (nats://host:4222,...; backend.cluster in YAML for the rest)")
	cmd.AddCommand(newBackendExportsCommand(), newUsersCommand())
	return cmd
}

func newBackendExportsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "exports",
		Short: "Work with the backend's exports (backend.exports in its config)",
		Args:  cobra.NoArgs,
	}
	var configPath string
	test := &cobra.Command{
		Use:   "test NAME",
		Short: "Send one test alert to the export NAME and print what it answered",
		Long: `Sends one test alert (detection export-test, severity info) to the export
NAME of the config file, in its format, once: no cursor, no retries. Prints
the destination's answer (HTTP status and body for a webhook; what was
written for syslog, which has no application-level reply, and files).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if configPath == "" {
				return errors.New("--config/-c is required: the exports are in the backend's config file")
			}
			file, err := backend.LoadConfig(configPath)
			if err != nil {
				return err
			}
			var names []string
			for _, c := range file.Backend.Exports {
				if c.Name != args[0] {
					names = append(names, c.Name)
					continue
				}
				reply, err := export.SendTest(cmd.Context(), c, export.TestAlert(time.Now()), export.Options{Version: version})
				if reply != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", c.Name, reply)
				}
				if err != nil {
					return fmt.Errorf("export %s: %w", c.Name, err)
				}
				return nil
			}
			return fmt.Errorf("no export named %q in %s (exports: %s)", args[0], configPath, strings.Join(names, ", "))
		},
	}
	test.Flags().StringVarP(&configPath, "config", "c", "", "the backend's YAML config file")
	cmd.AddCommand(test)
	return cmd
}
