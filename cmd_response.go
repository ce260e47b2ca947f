package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/response"
)

func newResponseCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "response",
		Short: "Validate and test response policies offline",
		Long: `Response policies (YAML, apiVersion harrier.io/v1, kind ResponsePolicies) match
alerts by detection, severity, namespace, pod labels, image and host or
container, and name actions, each policy in audit mode (record what it would
have done) or enforce mode.`,
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
	return cmd
}

// decideAlerts prints one JSON line per alert: its ID, detection and the
// policies' decisions. Lines that are not alerts are reported and skipped.
func decideAlerts(f *response.File, in io.Reader, out, errOut io.Writer, name string) error {
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
		fmt.Fprintln(out, string(b))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if bad > 0 {
		return fmt.Errorf("%d line(s) were not alerts", bad)
	}
	return nil
}
