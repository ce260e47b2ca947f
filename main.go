// Command harrier is Harrier's single binary: node sensor, analytics, spool,
// uplink and backend, chosen by subcommand. This file holds the CLI only.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	"github.com/harrier-sec/harrier/agent"
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
	root.AddCommand(newRulesCommand(), newResponseCommand(), newSimulateCommand(), newTokensCommand(), newAgentsCommand())
	root.AddCommand(newSimulateHelpers()...)
	return root
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// serviceFlags are the flags the long-running modes share.
type serviceFlags struct {
	configPath string
	dataDir    string
	logLevel   string
	cpuProfile string
}

// register adds the flags to cmd; dataDirHolds says what --data-dir holds
// in this mode.
func (f *serviceFlags) register(cmd *cobra.Command, dataDirHolds, defaultDataDir string) {
	cmd.Flags().StringVarP(&f.configPath, "config", "c", "", "YAML config file")
	cmd.Flags().StringVar(&f.dataDir, "data-dir", "", dataDirHolds+" (default "+defaultDataDir+")")
	cmd.Flags().StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	cmd.Flags().StringVar(&f.cpuProfile, "cpuprofile", "", "write a Go CPU profile to this file until exit (for benchmarks)")
	_ = cmd.Flags().MarkHidden("cpuprofile")
}

// serve runs a long-running mode: it makes the logger, keeps the Go heap
// under the cgroup's memory limit, profiles as --cpuprofile asks, and calls
// run with a context that ends on SIGINT or SIGTERM (systemd hears
// STOPPING=1 then). run loads the mode's config itself.
func (f *serviceFlags) serve(cmd *cobra.Command, run func(ctx context.Context, log *slog.Logger) error) error {
	log, err := newLogger(f.logLevel, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	// A long-running service keeps its Go heap under its cgroup's memory
	// limit (a DaemonSet's limits.memory, systemd's MemoryMax).
	switch limit, source, err := agent.ApplyMemoryLimit("/"); {
	case err != nil:
		log.Warn("memory limit not derived from the cgroup", "error", err)
	case limit > 0:
		log.Info("Go memory limit from the cgroup", "bytes", limit, "source", source)
	}
	stopProfile, err := startCPUProfile(f.cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, func() { notifyStopping(log) })
	return run(ctx, log)
}

// startCPUProfile writes a CPU profile to path (none when empty) until the
// returned func is called.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	out, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		_ = out.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); _ = out.Close() }, nil
}

// loadFile reads the config file at path with load, or returns the zero
// config (all defaults) when there is none.
func loadFile[T any](path string, load func(string) (T, error)) (T, error) {
	if path == "" {
		var zero T
		return zero, nil
	}
	return load(path)
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
