package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/agent"
	"github.com/harrier-sec/harrier/allinone"
	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/kube"
	"github.com/harrier-sec/harrier/sensor"
)

type eventsOptions struct {
	configPath string
	table      bool
	status     bool
	kinds      []string
	containers []string
	logLevel   string
	duration   time.Duration
	discard    bool
	statsOnEnd bool
	cpuProfile string
	alerts     bool
	format     string
	ruleFiles  []string
}

func newEventsCommand() *cobra.Command {
	var o eventsOptions
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Stream the sensor's events from this node as JSON lines (root)",
		Long: `Loads the eBPF sensor and prints one JSON object per event per line.
Filters: --kind exec,connect,file_open ... and --container ID (prefix match).
--status prints what was attached (and what this kernel refused) and exits.
--alerts runs the detections on this node and prints alerts instead of events
(--format falco prints them in Falco's JSON shape for falcosidekick).
The config file may be the agent's or the all-in-one's.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !o.alerts && (cmd.Flags().Changed("format") || len(o.ruleFiles) > 0) {
				return errors.New("--format and --rules apply to --alerts")
			}
			return runEvents(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.configPath, "config", "c", "", "YAML config file (the sensor, analytics and kube sections are used)")
	f.BoolVar(&o.table, "table", false, "print a human-readable table instead of JSON")
	f.BoolVar(&o.status, "status", false, "print attach points, kernel features and counters as JSON, then exit")
	f.StringSliceVar(&o.kinds, "kind", nil, "only these event kinds ("+strings.Join(api.KindNames(), ", ")+")")
	f.StringSliceVar(&o.containers, "container", nil, "only events from these container IDs (prefixes allowed)")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.DurationVar(&o.duration, "duration", 0, "stop after this long (0: until interrupted)")
	f.BoolVar(&o.discard, "discard", false, "read and count events without printing them (for benchmarks)")
	f.BoolVar(&o.statsOnEnd, "stats", false, "print the sensor's counters as JSON to stderr on exit")
	f.BoolVar(&o.alerts, "alerts", false, "print alerts (from the built-in and --rules detections) instead of events")
	f.StringVar(&o.format, "format", "json", "alert format with --alerts: json (Harrier's alert) or falco (Falco's alert JSON)")
	f.StringSliceVar(&o.ruleFiles, "rules", nil, "extra rule files (after the config's analytics.ruleFiles)")
	f.StringVar(&o.cpuProfile, "cpuprofile", "", "write a Go CPU profile to this file (for benchmarks)")
	_ = f.MarkHidden("cpuprofile")
	// A flag another one makes meaningless is refused rather than ignored:
	// one output at a time; the detections see every event, so the event
	// filters do not apply to --alerts; --status prints once and exits.
	cmd.MarkFlagsMutuallyExclusive("status", "alerts", "table", "discard")
	for _, filter := range []string{"kind", "container"} {
		cmd.MarkFlagsMutuallyExclusive("alerts", filter)
		cmd.MarkFlagsMutuallyExclusive("status", filter)
	}
	cmd.MarkFlagsMutuallyExclusive("status", "duration")
	cmd.MarkFlagsMutuallyExclusive("status", "stats")
	return cmd
}

func runEvents(ctx context.Context, o eventsOptions, stdout, stderr io.Writer) error {
	log, err := newLogger(o.logLevel, stderr)
	if err != nil {
		return err
	}
	kinds, err := api.ParseKinds(o.kinds)
	if err != nil {
		return fmt.Errorf("--kind: %w", err)
	}
	// The all-in-one's file is the agent's with a backend section: either
	// will do.
	file, err := loadFile(o.configPath, allinone.LoadConfig)
	if err != nil {
		return err
	}
	cfg := file.Config
	var engine *analytics.Engine
	var printAlert analytics.Emit
	if o.alerts {
		cfg.Analytics.RuleFiles = append(cfg.Analytics.RuleFiles, o.ruleFiles...)
		if engine, err = agent.NewEngine(cfg, log); err != nil {
			return err
		}
		if printAlert, err = alertPrinter(o.format, stdout, func(err error) { log.Error("print alert", "error", err) }); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	stopProfile, err := startCPUProfile(o.cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	s, err := sensor.New(cfg.Sensor, log)
	if err != nil {
		return fmt.Errorf("start sensor: %w", err)
	}
	defer s.Close()
	if o.status {
		stats, err := s.Stats()
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Status sensor.Status `json:"status"`
			Stats  sensor.Stats  `json:"stats"`
		}{s.Status(), stats})
	}
	if o.statsOnEnd {
		defer func() {
			if stats, err := s.Stats(); err == nil {
				_ = json.NewEncoder(stderr).Encode(stats)
			}
		}()
	}

	// Every goroutine started below is waited for before returning, also
	// when printing fails or the kube section cannot start.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	// Pod context, when the config's kube section asks for it.
	enrich, _, err := kube.StartEnrichment(ctx, cfg.Kube, log, func(name string, f func() error) {
		g.Go(func() error {
			if err := f(); err != nil && ctx.Err() == nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	})
	if err != nil {
		cancel()
		return errors.Join(fmt.Errorf("kube: %w", err), g.Wait())
	}
	events := make(chan *api.Event, s.QueueSize())
	g.Go(func() error { defer close(events); return s.Run(ctx, events) })
	err = printEvents(events, enrich, engine, printAlert, kinds, o, stdout)
	cancel()
	return errors.Join(err, g.Wait())
}

// printEvents prints what o asks for of events (or the alerts engine raises
// on them) until events closes or writing fails.
func printEvents(events <-chan *api.Event, enrich func(*api.Event), engine *analytics.Engine, printAlert analytics.Emit,
	kinds map[api.EventKind]bool, o eventsOptions, stdout io.Writer) (err error) {
	w := bufio.NewWriterSize(stdout, 64<<10)
	defer func() { err = errors.Join(err, w.Flush()) }()
	var print func(*api.Event) error
	switch {
	case engine != nil:
		defer func() { err = errors.Join(err, engine.Close(printAlert)) }()
		print = func(ev *api.Event) error { engine.Process(ev, printAlert); return nil }
	case o.discard:
		print = func(*api.Event) error { return nil }
	case o.table:
		tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
		fmt.Fprintln(tw, "TIME\tKIND\tPID\tUID\tCOMM\tCONTAINER\tDETAIL")
		if err := tw.Flush(); err != nil {
			return err
		}
		print = func(ev *api.Event) error {
			_, err := fmt.Fprintln(tw, tableRow(ev))
			return errors.Join(err, tw.Flush())
		}
	default:
		marshal := protojson.MarshalOptions{UseProtoNames: true}
		print = func(ev *api.Event) error {
			b, err := marshal.Marshal(ev)
			if err != nil {
				return fmt.Errorf("encode event: %w", err)
			}
			_, err = w.Write(append(b, '\n'))
			return err
		}
	}
	flush := time.NewTicker(200 * time.Millisecond)
	defer flush.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return nil
			}
			enrich(ev)
			if engine == nil && !matches(ev, kinds, o.containers) {
				continue
			}
			if err := print(ev); err != nil {
				return err
			}
		case now := <-flush.C:
			if engine != nil {
				engine.Tick(now, printAlert)
			}
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
}

func matches(ev *api.Event, kinds map[api.EventKind]bool, containers []string) bool {
	if len(kinds) > 0 && !kinds[ev.GetKind()] {
		return false
	}
	if len(containers) == 0 {
		return true
	}
	id := ev.GetContainer().GetId()
	for _, c := range containers {
		if id != "" && strings.HasPrefix(id, c) {
			return true
		}
	}
	return false
}

func tableRow(ev *api.Event) string {
	p := ev.GetProcess()
	cid := ev.GetContainer().GetId()
	if len(cid) > 12 {
		cid = cid[:12]
	}
	if cid == "" {
		cid = "-"
	}
	kind := ev.GetKind().Name()
	var detail string
	switch d := ev.GetDetail().(type) {
	case *api.Event_Exec:
		detail = p.GetExe() + " " + strings.Join(p.GetArgs(), " ")
		for _, s := range d.Exec.GetStdioSockets() {
			detail += fmt.Sprintf(" fd%d=%s", s.GetFd(), s.GetFamily())
			if r := s.GetRemote(); r != nil {
				detail += fmt.Sprintf(":%s:%d", r.GetIp(), r.GetPort())
			}
		}
	case *api.Event_Exit:
		detail = fmt.Sprintf("code=%d signal=%d", d.Exit.GetCode(), d.Exit.GetSignal())
	case *api.Event_Fork:
		detail = fmt.Sprintf("child=%d", d.Fork.GetChildTgid())
	case *api.Event_FileOpen:
		detail = fmt.Sprintf("%s flags=%#o result=%d", d.FileOpen.GetPath(), d.FileOpen.GetFlags(), d.FileOpen.GetResult())
	case *api.Event_Connect:
		dst := d.Connect.GetDestination()
		detail = fmt.Sprintf("%s port %d result=%d", dst.GetIp(), dst.GetPort(), d.Connect.GetResult())
	case *api.Event_Chmod:
		detail = fmt.Sprintf("%s mode=%#o result=%d", d.Chmod.GetPath(), d.Chmod.GetMode(), d.Chmod.GetResult())
	case *api.Event_Signal:
		detail = fmt.Sprintf("target=%d signal=%d result=%d", d.Signal.GetTargetPid(), d.Signal.GetSignal(), d.Signal.GetResult())
	case *api.Event_DnsQuery:
		srv := d.DnsQuery.GetServer()
		detail = fmt.Sprintf("%q type=%d server %s port %d", d.DnsQuery.GetName(), d.DnsQuery.GetQtype(), srv.GetIp(), srv.GetPort())
	default:
		// Everything else prints its detail message compactly.
		m := ev.ProtoReflect()
		if fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("detail")); fd != nil {
			b, _ := protojson.Marshal(m.Get(fd).Message().Interface())
			detail = string(b)
		}
	}
	return fmt.Sprintf("%s\t%s\t%d\t%d\t%s\t%s\t%s",
		ev.GetTime().AsTime().Local().Format("15:04:05.000"), kind, p.GetTgid(), p.GetUid(), p.GetComm(), cid, detail)
}
