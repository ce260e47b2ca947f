package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/api"
)

// alertPrinter writes alerts as JSON lines in the chosen format.
func alertPrinter(format string, w io.Writer, onErr func(error)) (analytics.Emit, error) {
	switch format {
	case "json":
		m := protojson.MarshalOptions{UseProtoNames: true}
		return func(a *api.Alert) {
			b, err := m.Marshal(a)
			if err == nil {
				_, err = w.Write(append(b, '\n'))
			}
			if err != nil {
				onErr(err)
			}
		}, nil
	case "falco":
		return func(a *api.Alert) {
			b, err := analytics.MarshalFalco(a)
			if err == nil {
				_, err = w.Write(append(b, '\n'))
			}
			if err != nil {
				onErr(err)
			}
		}, nil
	}
	return nil, fmt.Errorf("--format %q: want json or falco", format)
}

func newRulesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rules",
		Short: "Validate and test detection rules offline",
		Long: `Rule files are YAML with lists, macros and rules whose conditions are CEL
expressions over event fields (see "harrier rules fields"). The built-in rules
are always loaded first; files add rules, replace them (same id) or patch them
(same id with only enabled, severity, tags or exceptions).`,
	}
	cmd.AddCommand(newRulesValidateCommand(), newRulesTestCommand(), newRulesListCommand(), newRulesFieldsCommand())
	return cmd
}

// loadEngine loads the built-in rules and files; every rejected entry is
// printed to stderr with file, line and reason.
func loadEngine(files []string, stderr io.Writer) (*analytics.Engine, int, error) {
	rs, loadErr := analytics.LoadRules(files...)
	engine, compileErr := analytics.NewEngine(analytics.Config{}, rs, analytics.Options{Node: "rules-test"})
	if engine == nil {
		return nil, 0, compileErr
	}
	problems := analytics.Problems(loadErr, compileErr)
	for _, e := range problems {
		fmt.Fprintln(stderr, e)
	}
	return engine, len(problems), nil
}

func newRulesValidateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check rule files; print each problem with file, line and reason",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			engine, problems, err := loadEngine(files, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if problems > 0 {
				return fmt.Errorf("%d problem(s) in the rule files", problems)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %d rules loaded (built-in and %d file(s))\n", engine.Stats().RulesLoaded, len(files))
			return nil
		},
	}
}

func newRulesTestCommand() *cobra.Command {
	var eventsPath, format string
	cmd := &cobra.Command{
		Use:   "test [FILE...] --events EVENTS.jsonl",
		Short: "Replay recorded events (harrier events output) through the rules and print the alerts",
		Long: `Reads events as JSON lines, as "harrier events" prints them, runs them through
the built-in rules and FILEs, and prints each resulting alert once (with its
final count) as a JSON line. Lines that are not valid events are reported
with their line number and skipped.`,
		RunE: func(cmd *cobra.Command, files []string) error {
			if eventsPath == "" {
				return errors.New("--events is required")
			}
			engine, problems, err := loadEngine(files, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if problems > 0 {
				return fmt.Errorf("%d problem(s) in the rule files", problems)
			}
			print, err := alertPrinter(format, cmd.OutOrStdout(), func(error) {})
			if err != nil {
				return err
			}
			return replay(eventsPath, engine, print, cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVar(&eventsPath, "events", "", "JSON-lines file of events (- for stdin)")
	cmd.Flags().StringVar(&format, "format", "json", "alert format: json or falco")
	return cmd
}

// replay feeds a JSON-lines event file to the engine and prints every alert
// once, in the order alerts were first raised, with its final state.
func replay(path string, engine *analytics.Engine, print analytics.Emit, stderr io.Writer) error {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("--events: %w", err)
		}
		defer f.Close()
		r = f
	}
	var order []string
	final := map[string]*api.Alert{}
	collect := func(a *api.Alert) {
		if _, seen := final[a.GetId()]; !seen {
			order = append(order, a.GetId())
		}
		final[a.GetId()] = a
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	bad, n := 0, 0
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		ev := &api.Event{}
		if err := protojson.Unmarshal([]byte(text), ev); err != nil {
			fmt.Fprintf(stderr, "%s:%d: not an event, skipped: %v\n", path, line, err)
			bad++
			continue
		}
		n++
		engine.Process(ev, collect)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("--events %s: %w", path, err)
	}
	engine.Tick(time.Now(), collect)
	if err := engine.Close(collect); err != nil {
		return err
	}
	for _, id := range order {
		print(final[id])
	}
	if bad > 0 {
		fmt.Fprintf(stderr, "%d line(s) skipped, %d events replayed\n", bad, n)
	}
	return nil
}

func newRulesListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list [FILE...]",
		Short: "List the detections (built-in and from FILEs)",
		RunE: func(cmd *cobra.Command, files []string) error {
			rs, err := analytics.LoadRules(files...)
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), err)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSEVERITY\tENABLED\tTRIGGER\tNAME")
			for _, r := range rs.Rules {
				trigger := "detector"
				if r.Detector == "" {
					var kinds []string
					for _, k := range r.Kinds {
						kinds = append(kinds, k.ShortName())
					}
					trigger = strings.Join(kinds, ",")
				}
				fmt.Fprintf(tw, "%s\t%s\t%t\t%s\t%s\n", r.ID, r.Severity.Name(), r.Enabled, trigger, r.Name)
			}
			return tw.Flush()
		},
	}
}

func newRulesFieldsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "fields",
		Short: "List the event fields and functions conditions can use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "FIELD\tTYPE\tMEANING")
			fields := analytics.Fields()
			slices.SortFunc(fields, func(a, b analytics.FieldDoc) int { return strings.Compare(a.Name, b.Name) })
			for _, f := range fields {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Name, f.Type, f.Doc)
			}
			fmt.Fprintln(tw, "\nFUNCTION\t\tMEANING")
			for _, f := range analytics.Functions() {
				fmt.Fprintf(tw, "%s\t\t%s\n", f.Name, f.Doc)
			}
			return tw.Flush()
		},
	}
}
