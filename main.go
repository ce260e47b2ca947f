// Command harrier is Harrier's single binary: node sensor, analytics, spool,
// uplink and backend, chosen by subcommand. This file holds the CLI only.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/harrier-sec/harrier/agent"
	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/kube"
	"github.com/harrier-sec/harrier/sensor"
	"github.com/harrier-sec/harrier/simulate"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// Served into the simulation sandbox as "xmrig", this binary is the
	// harmless stand-in miner (see harrier simulate).
	if filepath.Base(os.Args[0]) == simulate.MinerName {
		os.Exit(simulate.StandInMiner(os.Args[1:], os.Stdout))
	}
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "harrier:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "harrier",
		Short:         "Runtime security for on-prem, air-gapped and edge Kubernetes nodes and Linux hosts",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newEventsCommand(), newVersionCommand(), newRunCommand(), newAgentCommand(),
		newBackendCommand(), newCertsCommand())
	root.AddCommand(newRulesCommand(), newSimulateCommand())
	root.AddCommand(newSimulateHelpers()...)
	return root
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, Go version and VCS revision",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rev := "unknown"
			if info, ok := debug.ReadBuildInfo(); ok {
				for _, s := range info.Settings {
					if s.Key == "vcs.revision" {
						rev = s.Value
					}
				}
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "harrier %s (revision %s, %s, %s/%s)\n",
				version, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}

type eventsOptions struct {
	configPath string
	table      bool
	json       bool
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
(--format falco prints them in Falco's JSON shape for falcosidekick).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runEvents(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.configPath, "config", "c", "", "YAML config file (the sensor section is used)")
	f.BoolVar(&o.json, "json", true, "print JSON lines (default)")
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
	return cmd
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
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
	var cfg agent.Config
	if o.configPath != "" {
		if cfg, err = agent.LoadConfig(o.configPath); err != nil {
			return err
		}
	}
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
	} else if o.format != "json" || len(o.ruleFiles) > 0 {
		return errors.New("--format and --rules apply to --alerts")
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}

	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
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

	// Pod context, when the config's kube section asks for it.
	enrich, _, err := kube.StartEnrichment(ctx, cfg.Kube, log, func(_ string, f func() error) { go func() { _ = f() }() })
	if err != nil {
		return fmt.Errorf("kube: %w", err)
	}

	events := make(chan *api.Event, s.QueueSize())
	runErr := make(chan error, 1)
	go func() {
		runErr <- s.Run(ctx, events)
		close(events)
	}()
	if o.statsOnEnd {
		defer func() {
			if stats, err := s.Stats(); err == nil {
				_ = json.NewEncoder(stderr).Encode(stats)
			}
		}()
	}
	w := bufio.NewWriterSize(stdout, 64<<10)
	defer w.Flush()
	var print func(*api.Event) error
	switch {
	case engine != nil:
		defer func() { _ = engine.Close(printAlert) }()
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
			if _, err := w.Write(append(b, '\n')); err != nil {
				return err
			}
			return nil
		}
	}
	flush := time.NewTicker(200 * time.Millisecond)
	defer flush.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return <-runErr
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

// serviceFlags are the flags the long-running modes share.
type serviceFlags struct {
	configPath string
	dataDir    string
	logLevel   string
	cpuProfile string
}

func (f *serviceFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.configPath, "config", "c", "", "YAML config file")
	cmd.Flags().StringVar(&f.dataDir, "data-dir", "", "spool, state, certificates and API token (default "+agent.DefaultDataDir+")")
	cmd.Flags().StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	cmd.Flags().StringVar(&f.cpuProfile, "cpuprofile", "", "write a Go CPU profile to this file until exit (for benchmarks)")
	_ = cmd.Flags().MarkHidden("cpuprofile")
}

// profile starts the CPU profile --cpuprofile asks for; the returned func
// stops it.
func (f *serviceFlags) profile() (func(), error) {
	if f.cpuProfile == "" {
		return func() {}, nil
	}
	out, err := os.Create(f.cpuProfile)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		_ = out.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); _ = out.Close() }, nil
}

// load reads the config file (if any) and applies the flags over it.
func (f *serviceFlags) load(stderr io.Writer) (agent.Config, *slog.Logger, error) {
	log, err := newLogger(f.logLevel, stderr)
	if err != nil {
		return agent.Config{}, nil, err
	}
	var cfg agent.Config
	if f.configPath != "" {
		if cfg, err = agent.LoadConfig(f.configPath); err != nil {
			return cfg, nil, err
		}
	}
	if f.dataDir != "" {
		cfg.DataDir = f.dataDir
	}
	// A long-running service keeps its Go heap under its cgroup's memory
	// limit (a DaemonSet's limits.memory, systemd's MemoryMax).
	switch limit, source, err := agent.ApplyMemoryLimit("/"); {
	case err != nil:
		log.Warn("memory limit not derived from the cgroup", "error", err)
	case limit > 0:
		log.Info("Go memory limit from the cgroup", "bytes", limit, "source", source)
	}
	return cfg, log, nil
}

func signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

func newRunCommand() *cobra.Command {
	var f serviceFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "All-in-one: sensor, spool and an embedded backend with its web UI on this node (root)",
		Long: `Runs the agent (sensor → spool → QUIC uplink) and an embedded backend in one process,
connected over real QUIC on loopback. Certificates are made on first start under <data-dir>/pki;
the API token is written to <data-dir>/api-token. Open the printed URL in a browser.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := f.load(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			stopProfile, err := f.profile()
			if err != nil {
				return err
			}
			defer stopProfile()
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			context.AfterFunc(ctx, func() { notifyStopping(log) })
			return agent.RunAllInOne(ctx, cfg, version, log, func(apiAddr string) {
				fmt.Fprintf(cmd.OutOrStdout(), "Harrier is running: web UI and API at http://%s/ (token in %s)\n",
					apiAddr, tokenPath(cfg))
				notifyReady(log)
			})
		},
	}
	f.register(cmd)
	return cmd
}

// notifyReady tells systemd (Type=notify units) that the service is up: for
// the agent, the spool is open and the sensor attached. Outside systemd
// NOTIFY_SOCKET is unset and this does nothing.
func notifyReady(log *slog.Logger) {
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("sd_notify READY=1 failed", "error", err)
	}
}

// notifyStopping tells systemd that shutdown has begun (it is called when the
// signal context ends), so a slow spool flush is not mistaken for a hang.
func notifyStopping(log *slog.Logger) {
	if _, err := daemon.SdNotify(false, daemon.SdNotifyStopping); err != nil {
		log.Warn("sd_notify STOPPING=1 failed", "error", err)
	}
}

// tokenPath is where the backend keeps its generated API token.
func tokenPath(cfg agent.Config) string {
	return filepath.Join(agent.WithDefaults(cfg).Backend.TokenDir, "api-token")
}

func newAgentCommand() *cobra.Command {
	var f serviceFlags
	var backendAddr, node string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Node agent: sensor, spool and QUIC uplink to a backend (root)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := f.load(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if backendAddr != "" {
				cfg.Uplink.Addr = backendAddr
			}
			if node != "" {
				cfg.Sensor.Node = node
			}
			stopProfile, err := f.profile()
			if err != nil {
				return err
			}
			defer stopProfile()
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			context.AfterFunc(ctx, func() { notifyStopping(log) })
			return agent.Run(ctx, cfg, version, log, func() { notifyReady(log) })
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&backendAddr, "backend", "", "backend QUIC address host:port (default 127.0.0.1:9471)")
	// In a DaemonSet the host name is the pod's; the chart passes the
	// Kubernetes node name here, which also picks the node's certificate.
	cmd.Flags().StringVar(&node, "node", "", "node name for events and the default agent ID (default: host name)")
	return cmd
}

func newBackendCommand() *cobra.Command {
	var f serviceFlags
	var apiAddr, ingestAddr string
	cmd := &cobra.Command{
		Use:   "backend",
		Short: "Receive agents over QUIC; serve the alert API and web UI",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, err := f.load(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			cfg = agent.WithDefaults(cfg)
			if apiAddr != "" {
				cfg.Backend.APIAddr = apiAddr
			}
			if ingestAddr != "" {
				cfg.Backend.IngestAddr = ingestAddr
			}
			stopProfile, err := f.profile()
			if err != nil {
				return err
			}
			defer stopProfile()
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			svc, err := backend.NewService(cfg.Backend, log)
			if err != nil {
				return err
			}
			// NewService has opened the store and bound both listeners, so
			// agents and API clients can connect from here on.
			notifyReady(log)
			context.AfterFunc(ctx, func() { notifyStopping(log) })
			return svc.Run(ctx)
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&apiAddr, "api-addr", "", "API and web UI address (default 127.0.0.1:9470)")
	cmd.Flags().StringVar(&ingestAddr, "ingest-addr", "", "QUIC ingest address (default 127.0.0.1:9471; use :9471 for remote agents)")
	return cmd
}

func newCertsCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make a small CA and backend/agent certificates for sites without a PKI",
		Long: `For sites without a PKI: "certs init" makes the CA, "certs backend" the backend's serving
certificate, "certs agent" one certificate per agent, "certs webhook" the serving certificate of the agent's
audit or admission webhook. Files go to --out (ca.crt/ca.key, backend.crt/key, <agent-id>.crt/key,
<name>.crt/key; keys 0600); what already exists is kept. Copy ca.crt and an agent's pair to each node
(as uplink.caFile/certFile/keyFile), and ca.crt with backend.* to the backend. Keep ca.key offline.`,
	}
	cmd.PersistentFlags().StringVar(&dir, "out", "pki", "directory holding the CA and the certificates")
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Make the CA (ca.crt, ca.key)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, _, err := agent.InitCA(dir); err != nil {
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
			if err := agent.IssueBackendCert(dir, hosts); err != nil {
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
				if err := agent.IssueAgentCert(dir, id, id); err != nil {
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
			if err := agent.IssueServerCert(dir, args[0], webhookHosts); err != nil {
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
