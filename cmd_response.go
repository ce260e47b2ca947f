package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/response"
)

func newResponseCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "response",
		Short: "Validate, test and dry-run response policies; push them to the backend; ask agents for actions",
		Long: `Response policies (YAML, apiVersion harrier.io/v1, kind ResponsePolicies) match
alerts by detection, severity, namespace, pod labels, image and host or
container, and name actions, each policy in audit mode (record what it would
have done) or enforce mode. Protected targets (pid 1, the agent, the kubelet,
the container runtime, kube-system) are refused unless a policy names them in
allowProtected, and a policy over its rateLimit only audits for a cool-down.`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate FILE",
		Short: "Check a policy file; print every problem",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := response.Load(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %d policies\n", len(f.Policies))
			return nil
		},
	})
	var alertPath string
	test := &cobra.Command{
		Use:   "test FILE --alert ALERTS.jsonl",
		Short: "Print what the policies would do with each alert (JSON lines, as the API and `harrier rules test` print them)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if alertPath == "" {
				return errors.New("--alert is required (a file of alerts as JSON lines, - for stdin)")
			}
			f, err := response.Load(args[0])
			if err != nil {
				return err
			}
			in := io.Reader(os.Stdin)
			if alertPath != "-" {
				file, err := os.Open(alertPath)
				if err != nil {
					return fmt.Errorf("--alert: %w", err)
				}
				defer file.Close()
				in = file
			}
			return decideAlerts(f, in, cmd.OutOrStdout(), cmd.ErrOrStderr(), alertPath)
		},
	}
	test.Flags().StringVar(&alertPath, "alert", "", "alerts as JSON lines (- for stdin)")
	cmd.AddCommand(test)
	cmd.AddCommand(newResponseDryRunCommand())
	cmd.AddCommand(newResponseBackendCommands()...)
	return cmd
}

func newResponseDryRunCommand() *cobra.Command {
	var (
		backendAPI         apiFlags
		alertsPath, since  string
		asEnforce, jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "dry-run FILE [--alerts ALERTS.jsonl | --api URL --token-file F --since 24h]",
		Short: "Report what the policies would have done with past alerts: from a file, or from the backend",
		Long: `Replays alerts, oldest first, through the policies as the agent would: each alert
once, protected targets refused (as far as the alerts tell), each enforcing
policy's rate limit and circuit breaker timed by the alerts. Nothing is done.
The alerts come from a file of JSON lines (--alerts), else from the backend's
alerts API (--api; the last 24 hours unless --since; at most 1000 alerts, the
newest).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := response.Load(args[0])
			if err != nil {
				return err
			}
			var alerts []*api.Alert
			switch {
			case alertsPath != "" && cmd.Flags().Changed("api"):
				return errors.New("--alerts and --api: give one")
			case alertsPath != "":
				if alerts, err = readAlertsFile(alertsPath, cmd.ErrOrStderr()); err != nil {
					return err
				}
				if since != "" {
					if alerts, err = alertsSince(alerts, since, time.Now()); err != nil {
						return err
					}
				}
			default:
				if since == "" {
					since = "24h"
				}
				if alerts, err = fetchAlerts(cmd.Context(), &backendAPI, since, cmd.ErrOrStderr()); err != nil {
					return err
				}
			}
			if asEnforce {
				for i := range f.Policies {
					f.Policies[i].Mode = response.ModeEnforce
				}
			}
			rep := response.DryRun(f, alerts)
			if jsonOut {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return rep.Write(cmd.OutOrStdout())
		},
	}
	backendAPI.register(cmd)
	cmd.Flags().StringVar(&alertsPath, "alerts", "", "`FILE` of alerts as JSON lines (- for stdin), as harrier response test reads them")
	cmd.Flags().StringVar(&since, "since", "", "only alerts last seen since this RFC 3339 time or this long ago (with --api: default 24h)")
	cmd.Flags().BoolVar(&asEnforce, "as-enforce", false, "count every policy as enforcing (what an audit policy would do once enforced)")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the report as JSON")
	return cmd
}

// fetchAlerts reads the backend's alerts last seen since since. The API
// answers at most backend.MaxLimit, the newest; a full answer is said on
// errOut.
func fetchAlerts(ctx context.Context, f *apiFlags, since string, errOut io.Writer) ([]*api.Alert, error) {
	var out struct {
		Alerts []json.RawMessage `json:"alerts"`
	}
	q := url.Values{"since": {since}, "limit": {strconv.Itoa(backend.MaxLimit)}}
	if err := f.do(ctx, http.MethodGet, "/api/v1/alerts?"+q.Encode(), nil, &out); err != nil {
		return nil, err
	}
	alerts := make([]*api.Alert, 0, len(out.Alerts))
	for i, raw := range out.Alerts {
		a := &api.Alert{}
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(raw, a); err != nil {
			return nil, fmt.Errorf("GET /api/v1/alerts: alert %d: %w", i, err)
		}
		alerts = append(alerts, a)
	}
	if len(alerts) == backend.MaxLimit {
		fmt.Fprintf(errOut, "the backend answered its maximum of %d alerts, the newest: older alerts since %s were not replayed (narrow --since)\n", backend.MaxLimit, since)
	}
	return alerts, nil
}

// alertsSince keeps the alerts last seen at or after since (RFC 3339, or a
// duration back from now), as the backend's since parameter does.
func alertsSince(alerts []*api.Alert, since string, now time.Time) ([]*api.Alert, error) {
	from, err := time.Parse(time.RFC3339Nano, since)
	if err != nil {
		d, derr := time.ParseDuration(since)
		if derr != nil || d <= 0 {
			return nil, fmt.Errorf("--since %q: want an RFC 3339 time or a positive duration (24h)", since)
		}
		from = now.Add(-d)
	}
	return slices.DeleteFunc(alerts, func(a *api.Alert) bool {
		t := a.GetLastSeen()
		if t == nil {
			t = a.GetFirstSeen()
		}
		return t.AsTime().Before(from)
	}), nil
}

// readAlertsFile reads a file of alerts as JSON lines (- for stdin); lines
// that are not alerts are reported on errOut and make it fail.
func readAlertsFile(name string, errOut io.Writer) ([]*api.Alert, error) {
	in := io.Reader(os.Stdin)
	if name != "-" {
		file, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("--alerts: %w", err)
		}
		defer file.Close()
		in = file
	}
	var alerts []*api.Alert
	err := eachAlert(in, errOut, name, func(a *api.Alert) error {
		alerts = append(alerts, a)
		return nil
	})
	return alerts, err
}

// decideAlerts prints one JSON line per alert: its ID, detection and the
// policies' decisions. Lines that are not alerts are reported and skipped.
func decideAlerts(f *response.File, in io.Reader, out, errOut io.Writer, name string) error {
	return eachAlert(in, errOut, name, func(a *api.Alert) error {
		decisions := f.Decide(a)
		if decisions == nil {
			decisions = []response.Decision{}
		}
		b, err := json.Marshal(struct {
			Alert     string              `json:"alert"`
			Detection string              `json:"detection"`
			Decisions []response.Decision `json:"decisions"`
		}{a.GetId(), a.GetDetectionId(), decisions})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(out, string(b))
		return err
	})
}

// eachAlert calls fn with each alert of in, JSON lines as the API prints
// alerts; a line that is not an alert is reported on errOut with its
// number, skipped, and makes eachAlert fail at the end.
func eachAlert(in io.Reader, errOut io.Writer, name string, fn func(*api.Alert) error) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	bad := 0
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		a := &api.Alert{}
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(text), a); err != nil {
			fmt.Fprintf(errOut, "%s:%d: not an alert: %v\n", name, line, err)
			bad++
			continue
		}
		if err := fn(a); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if bad > 0 {
		return fmt.Errorf("%d line(s) were not alerts", bad)
	}
	return nil
}
