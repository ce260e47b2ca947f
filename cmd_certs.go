package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/harrier-sec/harrier/transport"
)

func newCertsCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make a small CA and backend/agent certificates for sites without a PKI",
		Long: `For sites without a PKI: "certs init" makes the CA, "certs backend" the backend's serving
certificate, "certs agent" one certificate per agent, "certs webhook" the serving certificate of the agent's
audit or admission webhook. Files go to --out (ca.crt/ca.key, backend.crt/key, <agent-id>.crt/key,
<name>.crt/key; keys 0600); what already exists is kept.

With enrollment (the default in the Helm chart), "certs init" and "certs backend" are all that is needed:
give the backend ca.crt, backend.crt, backend.key and ca.key (backend.caKeyFile, with backend.apiTLS), and
each node only ca.crt; agents then get and renew their own short-lived certificates (uplink.enroll), with
their pod's service-account token or a bootstrap token from "harrier tokens create".

Without enrollment, copy ca.crt and an agent's pair to each node (as uplink.caFile/certFile/keyFile), and
ca.crt with backend.* to the backend, and keep ca.key offline. An agent's ID is the one its certificate
names: "certs agent node-a" used on host b runs as agent node-a.`,
	}
	cmd.PersistentFlags().StringVar(&dir, "out", "pki", "directory holding the CA and the certificates")
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Make the CA (ca.crt, ca.key)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, _, err := transport.InitCA(dir); err != nil {
				return err
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "CA in %s\n", dir)
			return err
		},
	}
	var hosts []string
	backendCmd := &cobra.Command{
		Use:   "backend",
		Short: "Issue the backend's certificate (backend.crt, backend.key)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(hosts) == 0 {
				return errors.New("--host is required: the DNS names and IPs agents use to reach the backend")
			}
			if err := transport.IssueBackendCert(dir, hosts); err != nil {
				return err
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "backend certificate in %s\n", dir)
			return err
		},
	}
	backendCmd.Flags().StringSliceVar(&hosts, "host", nil, "DNS name or IP of the backend (repeatable)")
	agentCmd := &cobra.Command{
		Use:   "agent ID...",
		Short: "Issue agent certificates (<id>.crt, <id>.key); the ID is usually the node name",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, ids []string) error {
			for _, id := range ids {
				if err := transport.IssueAgentCert(dir, id, id); err != nil {
					return err
				}
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "agent certificates in %s\n", dir)
			return err
		},
	}
	var webhookHosts []string
	webhookCmd := &cobra.Command{
		Use:   "webhook NAME",
		Short: "Issue a webhook serving certificate (NAME.crt, NAME.key), e.g. NAME audit or admission",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(webhookHosts) == 0 {
				return errors.New("--host is required: the DNS names and IPs the API server uses to reach the webhook")
			}
			switch args[0] {
			case "ca", "backend":
				return fmt.Errorf("webhook name %q would overwrite the %s certificate; pick another", args[0], args[0])
			}
			if err := transport.IssueServerCert(dir, args[0], webhookHosts); err != nil {
				return err
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s certificate in %s\n", args[0], dir)
			return err
		},
	}
	webhookCmd.Flags().StringSliceVar(&webhookHosts, "host", nil, "DNS name or IP of the webhook (repeatable)")
	cmd.AddCommand(initCmd, backendCmd, agentCmd, webhookCmd)
	return cmd
}
