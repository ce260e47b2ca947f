package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"

	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/kube/kubeclient"
	"github.com/harrier-sec/harrier/simulate"
	"github.com/harrier-sec/harrier/transport"
)

type simulateOptions struct {
	local      bool
	kubeconfig string
	scenarios  []string
	apiURL     string
	caFile     string
	tokenFile  string
	timeout    time.Duration
	keep       bool
	rootfs     string
	json       bool
	logLevel   string
	// Cluster mode.
	namespace    string
	image        string
	harrierImage string
	readyTimeout time.Duration
	cleanup      bool
}

func newSimulateCommand() *cobra.Command {
	var o simulateOptions
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Run attack scenarios in a sandbox and check that the expected alerts reach the backend (root)",
		Long: `Plays attack scenarios against a deliberately vulnerable victim web application and reads the
alerts back from the backend API of a running "harrier run" (or agent + backend).

--local: victim and attacker are runc containers, each in its own network namespace, joined by a veth
pair; the metadata address and a DNS server for the test threat-intel domain exist only in that
sandbox. Nothing harmful runs and everything is removed afterwards, also on Ctrl-C.

--kubeconfig FILE: a namespace of its own in the cluster (harrier-simulate-XXXXX, pod security
"privileged"), a victim pod and Service per scenario and an attacker pod that drives them; the
metadata address and the DNS server exist only inside each victim pod, network policies confine the
pods, and the namespace is deleted afterwards, also on Ctrl-C. --cleanup deletes namespaces an
interrupted run left behind (labelled app.kubernetes.io/managed-by=harrier-simulate).
Scenarios: recon, lateral, secrets, mining, webshell, threat-intel (or all).
The exit code is non-zero when an expected alert is missing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSimulate(cmd, o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.local, "local", false, "run the sandbox on this node with runc (root)")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "cluster mode: play the scenarios in a namespace of their own in this cluster")
	f.StringVar(&o.namespace, "namespace", "", "cluster mode: the namespace to create (must not exist; default harrier-simulate-<random>)")
	f.StringVar(&o.image, "image", simulate.DefaultImage, "cluster mode: the victims' image (busybox: sh, httpd, wget, nc, ip)")
	f.StringVar(&o.harrierImage, "harrier-image", "docker.io/harrier-sec/harrier:"+version, "cluster mode: the image holding /usr/bin/harrier (attacker and victim sidecars)")
	f.DurationVar(&o.readyTimeout, "ready-timeout", 3*time.Minute, "cluster mode: how long the pods may take to become Ready")
	f.BoolVar(&o.cleanup, "cleanup", false, "cluster mode: delete the namespaces an interrupted run left behind, then exit")
	f.StringSliceVar(&o.scenarios, "scenario", []string{"all"}, "all, or some of recon,lateral,secrets,mining,webshell,threat-intel")
	f.StringVar(&o.apiURL, "api", "http://127.0.0.1:9470", "backend API base URL")
	f.StringVar(&o.caFile, "ca-file", "", "CA certificate of an https:// API (a backend with apiTLS, as the Helm chart deploys it)")
	f.StringVar(&o.tokenFile, "token-file", "", "file holding the API token (default "+backend.FileConfig{}.Resolved().TokenFile()+")")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long each expected alert may take after its behaviour")
	f.BoolVar(&o.keep, "keep", false, "leave the sandbox (or namespace) up after the run until Ctrl-C, for inspection")
	f.StringVar(&o.rootfs, "rootfs", "", "directory of tools laid over the busybox image instead of the host's curl and nmap")
	f.BoolVar(&o.json, "json", false, "print the report as JSON")
	f.StringVar(&o.logLevel, "log-level", "warn", "log level: debug, info, warn, error")
	return cmd
}

func runSimulate(cmd *cobra.Command, o simulateOptions) error {
	if o.local == (o.kubeconfig != "") {
		return errors.New("choose one mode: --local (this node, runc) or --kubeconfig FILE (a cluster)")
	}
	if o.local && (o.cleanup || o.namespace != "") {
		return errors.New("--cleanup and --namespace are for cluster mode (--kubeconfig)")
	}
	log, err := newLogger(o.logLevel, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var kubeConfig *rest.Config
	if o.kubeconfig != "" {
		if kubeConfig, err = kubeclient.Load(o.kubeconfig, "harrier-simulate"); err != nil {
			return err
		}
		if o.cleanup {
			names, err := simulate.Cleanup(ctx, kubeConfig)
			for _, n := range names {
				fmt.Fprintln(cmd.OutOrStdout(), "deleted namespace", n)
			}
			if err == nil && len(names) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no namespace left behind by harrier simulate")
			}
			return err
		}
	}
	scenarios, err := simulate.ParseScenarios(o.scenarios)
	if err != nil {
		return fmt.Errorf("--scenario: %w", err)
	}
	if o.local {
		if err := simulate.Preflight(); err != nil {
			return err
		}
	}
	if o.tokenFile == "" {
		o.tokenFile = backend.FileConfig{}.Resolved().TokenFile()
	}
	tok, err := os.ReadFile(o.tokenFile)
	if err != nil {
		return fmt.Errorf("API token: %w (pass --token-file)", err)
	}
	token := strings.TrimSpace(string(tok))
	var roots *x509.CertPool
	if o.caFile != "" {
		if roots, err = transport.LoadCAPool(o.caFile); err != nil {
			return fmt.Errorf("--ca-file: %w", err)
		}
	}
	var rep *simulate.Report
	if o.local {
		self, serr := os.Executable()
		if serr != nil {
			return serr
		}
		opts := simulate.Options{Scenarios: scenarios, APIURL: o.apiURL, Token: token, RootCAs: roots,
			Timeout: o.timeout, Rootfs: o.rootfs, Self: self, Log: log}
		if o.keep {
			opts.Keep = func(ids []string) {
				fmt.Fprintf(cmd.ErrOrStderr(), "sandbox kept up (containers %s); Ctrl-C removes it\n", strings.Join(ids, ", "))
				<-ctx.Done()
			}
		}
		rep, err = simulate.RunLocal(ctx, opts)
	} else {
		opts := simulate.ClusterOptions{Scenarios: scenarios, APIURL: o.apiURL, Token: token, RootCAs: roots, Timeout: o.timeout,
			Kube: kubeConfig, Namespace: o.namespace, Image: o.image, HarrierImage: o.harrierImage,
			ReadyTimeout: o.readyTimeout, Log: log}
		if o.keep {
			opts.Keep = func(ns string) {
				fmt.Fprintf(cmd.ErrOrStderr(), "namespace %s kept up; Ctrl-C deletes it\n", ns)
				<-ctx.Done()
			}
		}
		rep, err = simulate.RunCluster(ctx, opts)
	}
	if rep != nil {
		if o.json {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			if jerr := enc.Encode(rep); jerr != nil {
				return errors.Join(err, jerr)
			}
		} else if terr := rep.WriteTable(cmd.OutOrStdout()); terr != nil {
			return errors.Join(err, terr)
		}
	}
	if err != nil {
		return err
	}
	if m := rep.Missing(); m > 0 {
		return fmt.Errorf("%d expected alert(s) missing", m)
	}
	return nil
}

// newSimulateHelpers are the hidden subcommands the simulator re-executes
// itself with inside the sandbox's network namespaces.
func newSimulateHelpers() []*cobra.Command {
	netns := &cobra.Command{
		Use:                simulate.NetnsCommand + " NETNS PROGRAM [ARGS...]",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			if len(args) < 2 {
				return errors.New("usage: " + simulate.NetnsCommand + " NETNS PROGRAM [ARGS...]")
			}
			return simulate.EnterNetnsAndExec(args[0], args[1:])
		},
	}
	var miner, cluster, plan, answer string
	attacker := &cobra.Command{
		Use:    simulate.AttackerCommand,
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			if cluster == "" {
				return simulate.ServeAttacker(cmd.Context(), os.Stdin, cmd.OutOrStdout(), miner, log)
			}
			// In a pod: SIGTERM (the pod's deletion) ends it.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			switch cluster {
			case simulate.RoleAttackerPod:
				return simulate.ServeClusterAttacker(ctx, plan, miner, cmd.OutOrStdout(), log)
			case simulate.RoleVictimSidecar:
				ip, err := netip.ParseAddr(answer)
				if err != nil {
					return fmt.Errorf("--answer: %w", err)
				}
				return simulate.ServeVictimSidecar(ctx, ip, log)
			}
			return fmt.Errorf("--cluster %q: want %s or %s", cluster, simulate.RoleAttackerPod, simulate.RoleVictimSidecar)
		},
	}
	attacker.Flags().StringVar(&miner, "miner", "", "file served as the stand-in miner")
	attacker.Flags().StringVar(&cluster, "cluster", "", "cluster role: "+simulate.RoleAttackerPod+" or "+simulate.RoleVictimSidecar+" (in the simulator's pods only)")
	attacker.Flags().StringVar(&plan, "plan", "", "the attacker's plan (cluster role "+simulate.RoleAttackerPod+")")
	attacker.Flags().StringVar(&answer, "answer", "", "the address the DNS sidecar answers the test domain with")
	return []*cobra.Command{netns, attacker}
}
