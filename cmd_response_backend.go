package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/response"
)

// newResponseBackendCommands are the response subcommands that talk to the
// backend's API with the response token: push policies, ask for an action,
// list commands.
func newResponseBackendCommands() []*cobra.Command {
	tokenHelp := func(f *apiFlags, cmd *cobra.Command) {
		f.register(cmd)
		f.defaultToken = backend.FileConfig{}.Resolved().ResponseTokenPath()
		cmd.PersistentFlags().Lookup("token-file").Usage = "file holding the response token (default " + f.defaultToken + ")"
	}

	var pushAPI apiFlags
	push := &cobra.Command{
		Use:   "push FILE",
		Short: "Make FILE the site's response policies at the backend, which sends them to every agent",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := response.Load(args[0]); err != nil {
				return err
			}
			raw, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			var out struct {
				Policies backend.PolicyState `json:"policies"`
			}
			if err := pushAPI.do(cmd.Context(), "PUT", "/api/v1/response/policies", raw, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "version %d: %d policies, %d kill-at-exec lists (sha256 %s)\n",
				out.Policies.Version, out.Policies.Policies, out.Policies.ExecDeny, out.Policies.SHA256)
			return nil
		},
	}
	tokenHelp(&pushAPI, push)

	var actAPI apiFlags
	var req backend.CommandRequest
	var startTime string
	var wait time.Duration
	act := &cobra.Command{
		Use:   "act ACTION (--alert ID | --agent ID and a target)",
		Short: "Ask an agent for a response action (or its undo) and wait for the outcome",
		Long: `Actions: ` + fmt.Sprint(response.CommandActions()) + `.
A process action needs --pid and --start-time (or --alert, which gives both and
the agent); a container action --container-id and --cgroup (or --alert);
restore-file --path (the quarantined file) and --restore-path.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Action = args[0]
			if startTime != "" {
				t, err := time.Parse(time.RFC3339Nano, startTime)
				if err != nil {
					return fmt.Errorf("--start-time: %w", err)
				}
				req.Target.StartTime = &t
			}
			var out struct {
				Command backend.CommandRecord `json:"command"`
			}
			if err := actAPI.do(cmd.Context(), "POST", "/api/v1/response/commands", req, &out); err != nil {
				return err
			}
			rec, err := waitCommand(cmd.Context(), &actAPI, out.Command, wait)
			printCommand(cmd, rec)
			return err
		},
	}
	tokenHelp(&actAPI, act)
	fl := act.Flags()
	fl.StringVar(&req.AgentID, "agent", "", "the agent to act (default: the one that reported --alert)")
	fl.StringVar(&req.AlertID, "alert", "", "the alert whose process or container to act on")
	fl.Uint32Var(&req.Target.PID, "pid", 0, "host PID of the process")
	fl.StringVar(&startTime, "start-time", "", "the process's start time (RFC 3339), as its alert gives it")
	fl.StringVar(&req.Target.ContainerID, "container-id", "", "the container's ID")
	fl.StringVar(&req.Target.Cgroup, "cgroup", "", "the container's cgroup path, as its alert gives it")
	fl.StringVar(&req.Target.Path, "path", "", "restore-file: the quarantined file")
	fl.StringVar(&req.Target.RestorePath, "restore-path", "", "restore-file: where to put it back")
	fl.Uint32Var(&req.Target.Mode, "mode", 0, "restore-file: the mode to restore (default 0755)")
	fl.StringVar(&req.Reason, "reason", "", "why (kept with the command)")
	fl.StringSliceVar(&req.AllowProtected, "allow-protected", nil, "protected targets this command may act on: "+strings.Join(response.ProtectedClasses(), ", "))
	fl.StringVar(&req.ExpiresIn, "expires", "", "how long the agent may take it (default 15m)")
	fl.DurationVar(&wait, "wait", 30*time.Second, "how long to wait for the outcome (0: do not wait)")

	var listAPI apiFlags
	var agent string
	list := &cobra.Command{
		Use:   "commands [--agent ID]",
		Short: "List the commands sent to agents and their outcomes, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Commands []backend.CommandRecord `json:"commands"`
			}
			if err := listAPI.do(cmd.Context(), "GET", "/api/v1/response/commands?agent="+url.QueryEscape(agent), nil, &out); err != nil {
				return err
			}
			for _, c := range out.Commands {
				printCommand(cmd, c)
			}
			return nil
		},
	}
	listAPI.register(list)
	list.Flags().StringVar(&agent, "agent", "", "only this agent's")
	return []*cobra.Command{push, act, list}
}

// waitCommand polls the command until it is no longer pending or wait has
// passed; still pending then is an error that says so.
func waitCommand(ctx context.Context, f *apiFlags, rec backend.CommandRecord, wait time.Duration) (backend.CommandRecord, error) {
	deadline := time.Now().Add(wait)
	for rec.State == backend.CommandPending && wait > 0 {
		if time.Now().After(deadline) {
			return rec, fmt.Errorf("command %s still pending after %s: is agent %s connected? (it expires at %s)",
				rec.ID, wait, rec.AgentID, rec.Expires.Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return rec, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		var out struct {
			Command backend.CommandRecord `json:"command"`
		}
		if err := f.do(ctx, "GET", "/api/v1/response/commands/"+url.PathEscape(rec.ID), nil, &out); err != nil {
			return rec, err
		}
		rec = out.Command
	}
	if rec.State != backend.CommandPending && rec.State != response.OutcomeDone {
		return rec, errors.New("the action was not done: " + rec.State)
	}
	return rec, nil
}

func printCommand(cmd *cobra.Command, rec backend.CommandRecord) {
	rec.Signed = nil
	b, _ := json.Marshal(rec)
	fmt.Fprintln(cmd.OutOrStdout(), string(b))
}
