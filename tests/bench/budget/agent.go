package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/harrier-sec/harrier/sensor"
	"github.com/harrier-sec/harrier/tests/bench/internal/benchutil"
)

// agent is `harrier agent` (or `harrier run`) in the cgroup.
type agent struct {
	cmd     *exec.Cmd
	backend *exec.Cmd // outside the cgroup; nil in run mode
	// tokenFile holds the backend's API token.
	tokenFile string
	api       string
	token     string
	metrics   string
	markers   string
	markerN   int
	exited    chan struct{}
	// audit is the audit webhook receiver, when the agent runs one.
	audit *auditTarget
}

// startAgent starts the agent in cg; withAudit also turns on its audit
// webhook receiver (kube.audit, with kube.mode off: the receiver needs no
// API server).
func startAgent(ctx context.Context, o options, work string, cg *cgroup, withAudit bool) (*agent, error) {
	api, err := benchutil.FreeAddr("tcp")
	if err != nil {
		return nil, err
	}
	metrics, err := benchutil.FreeAddr("tcp")
	if err != nil {
		return nil, err
	}
	watched := filepath.Join(work, "watched")
	if err := os.MkdirAll(watched, 0o755); err != nil {
		return nil, err
	}
	paths, _ := json.Marshal(append(sensor.DefaultWatchPaths(), watched+"/"))
	cfg := filepath.Join(work, "harrier.yaml")
	conf := fmt.Sprintf("dataDir: %s/data\nmetricsAddr: %s\nsensor:\n  watchPaths: %s\nbackend:\n  apiAddr: %s\n  ingestAddr: 127.0.0.1:0\n",
		work, metrics, paths, api)
	var backend *exec.Cmd
	if o.mode == "agent" {
		var err error
		if backend, conf, err = startBackend(ctx, o, work, api); err != nil {
			return nil, err
		}
		conf = fmt.Sprintf("dataDir: %s/data\nmetricsAddr: %s\nsensor:\n  watchPaths: %s\n", work, metrics, paths) + conf
	}
	var target *auditTarget
	if withAudit {
		var kubeConf string
		if target, kubeConf, err = auditReceiver(ctx, o, work); err != nil {
			return nil, err
		}
		conf += kubeConf
	}
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	// The shell moves itself into the cgroup, then becomes harrier.
	script := joinProcs(cg.procsFiles) + `exec "$0" ` + o.mode + ` -c "$CFG"`
	cmd := exec.CommandContext(ctx, "sh", "-c", script, o.harrier)
	cmd.Env = append(os.Environ(), "CFG="+cfg, "GOMEMLIMIT=")
	logf, err := os.Create(filepath.Join(work, "harrier.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	a := &agent{cmd: cmd, backend: backend, api: "http://" + api, metrics: "http://" + metrics + "/metrics", markers: filepath.Join(work, "markers"),
		exited: make(chan struct{}), audit: target}
	go func() { _ = cmd.Wait(); close(a.exited) }()
	if err := os.MkdirAll(a.markers, 0o755); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		tokenFile := filepath.Join(work, "data", "api-token")
		if o.mode == "agent" {
			tokenFile = filepath.Join(work, "backend", "api-token")
		}
		if tok, err := os.ReadFile(tokenFile); err == nil {
			if _, err := a.scrape(); err == nil {
				a.token, a.tokenFile = strings.TrimSpace(string(tok)), tokenFile
				time.Sleep(2 * time.Second) // the uplink connects
				return a, nil
			}
		}
		select {
		case <-a.exited:
			log, _ := os.ReadFile(filepath.Join(work, "harrier.log"))
			return nil, fmt.Errorf("harrier %s exited at start:\n%s", o.mode, log)
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil, fmt.Errorf("harrier %s did not come up in 60 s", o.mode)
}

func joinProcs(files []string) string {
	var b strings.Builder
	for _, f := range files {
		fmt.Fprintf(&b, "echo $$ > %q && ", f)
	}
	return b.String()
}

func (a *agent) stop() {
	_ = a.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-a.exited:
	case <-time.After(15 * time.Second):
		_ = a.cmd.Process.Kill()
	}
	if a.backend != nil {
		_ = a.backend.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { _ = a.backend.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = a.backend.Process.Kill()
		}
	}
}

// startBackend makes a PKI with `harrier certs` and starts `harrier
// backend` outside the agent's cgroup, API on api; it returns the agent's
// uplink config section.
func startBackend(ctx context.Context, o options, work, api string) (*exec.Cmd, string, error) {
	pki, err := ensurePKI(ctx, o, work)
	if err != nil {
		return nil, "", err
	}
	for _, args := range [][]string{
		{"certs", "backend", "--out", pki, "--host", "127.0.0.1"},
		{"certs", "agent", "--out", pki, "bench-node"},
	} {
		if out, err := exec.CommandContext(ctx, o.harrier, args...).CombinedOutput(); err != nil {
			return nil, "", fmt.Errorf("harrier %v: %w: %s", args, err, out)
		}
	}
	ingest, err := freeUDPPort()
	if err != nil {
		return nil, "", err
	}
	cfg := filepath.Join(work, "backend.yaml")
	conf := fmt.Sprintf("dataDir: %s/backend\nbackend:\n  apiAddr: %s\n  ingestAddr: %s\n  caFile: %s/ca.crt\n  certFile: %s/backend.crt\n  keyFile: %s/backend.key\n",
		work, api, ingest, pki, pki, pki)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		return nil, "", err
	}
	logf, err := os.Create(filepath.Join(work, "backend.log"))
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(o.harrier, "backend", "-c", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	uplink := fmt.Sprintf("uplink:\n  addr: %s\n  serverName: 127.0.0.1\n  agentID: bench-node\n  caFile: %s/ca.crt\n  certFile: %s/bench-node.crt\n  keyFile: %s/bench-node.key\n",
		ingest, pki, pki, pki)
	return cmd, uplink, nil
}

// ensurePKI makes the bench's CA with `harrier certs init` once.
func ensurePKI(ctx context.Context, o options, work string) (string, error) {
	pki := filepath.Join(work, "pki")
	if _, err := os.Stat(filepath.Join(pki, "ca.crt")); err == nil {
		return pki, nil
	}
	if out, err := exec.CommandContext(ctx, o.harrier, "certs", "init", "--out", pki).CombinedOutput(); err != nil {
		return "", fmt.Errorf("harrier certs init: %w: %s", err, out)
	}
	return pki, nil
}

// auditReceiver makes the audit webhook's serving certificate (`harrier
// certs webhook audit`) and bearer token, and returns where to post and the
// agent's kube config section.
func auditReceiver(ctx context.Context, o options, work string) (*auditTarget, string, error) {
	pki, err := ensurePKI(ctx, o, work)
	if err != nil {
		return nil, "", err
	}
	if out, err := exec.CommandContext(ctx, o.harrier, "certs", "webhook", "audit", "--out", pki, "--host", "127.0.0.1").CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("harrier certs webhook audit: %w: %s", err, out)
	}
	addr, err := benchutil.FreeAddr("tcp")
	if err != nil {
		return nil, "", err
	}
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return nil, "", err
	}
	t := &auditTarget{addr: addr, caFile: filepath.Join(pki, "ca.crt"), tokenFile: filepath.Join(work, "audit-token")}
	if err := os.WriteFile(t.tokenFile, []byte(hex.EncodeToString(tok)+"\n"), 0o600); err != nil {
		return nil, "", err
	}
	conf := fmt.Sprintf("kube:\n  mode: \"off\"\n  audit:\n    webhookAddr: %s\n    certFile: %s/audit.crt\n    keyFile: %s/audit.key\n    tokenFile: %s\n",
		addr, pki, pki, t.tokenFile)
	return t, conf, nil
}

func freeUDPPort() (string, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.LocalAddr().String(), nil
}

func (a *agent) alive() bool {
	select {
	case <-a.exited:
		return false
	default:
		return true
	}
}
