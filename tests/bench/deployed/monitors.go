package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/harrier-sec/harrier/tests/bench/internal/benchutil"
)

// monitor names, in the report's order.
const (
	monNone   = "none"
	monAgent  = "agent"
	monRun    = "run"
	monAuditd = "auditd"
	monEvents = "events"
)

var allMonitors = []string{monNone, monAgent, monRun, monAuditd, monEvents}

// monitorLabel says what a monitor is in the table.
func monitorLabel(name string) string {
	switch name {
	case monAgent:
		return "harrier agent + backend (QUIC, mTLS)"
	case monRun:
		return "harrier run (all-in-one)"
	case monAuditd:
		return "auditd (execve, connect, -w)"
	case monEvents:
		return "harrier events --discard (sensor alone)"
	}
	return "no monitor"
}

// running is one started monitor.
type running struct {
	name string
	// cpuPIDs are the processes (and kernel threads) whose CPU time is the
	// monitor's: the agent and its backend; auditd and kauditd.
	cpuPIDs []int
	// memPID is the process whose memory is reported (the agent, not its
	// backend; auditd, not the kernel thread).
	memPID int
	// backendPID is the agent's backend, reported apart; 0 otherwise.
	backendPID int
	// metrics is the agent's /metrics URL, for the drop counters.
	metrics string
	stop    func() error
}

// procs is the set of processes a monitor started, stopped in reverse.
type procs struct {
	cmds []*exec.Cmd
	done []chan error
}

// start starts a long-running process with its output in logPath; it dies
// with the benchmark (SIGKILL) should the benchmark die first.
func (p *procs) start(logPath string, name string, args ...string) (*exec.Cmd, <-chan error, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, nil, fmt.Errorf("log of %s: %w", name, err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "GOMEMLIMIT=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); logf.Close() }()
	p.cmds = append(p.cmds, cmd)
	p.done = append(p.done, done)
	return cmd, done, nil
}

// stopAll sends sig to every process, newest first, and waits for each;
// one that outlives timeout is killed.
func (p *procs) stopAll(sig syscall.Signal, timeout time.Duration) error {
	var errs []error
	for i := len(p.cmds) - 1; i >= 0; i-- {
		cmd, done := p.cmds[i], p.done[i]
		_ = cmd.Process.Signal(sig)
		select {
		case err := <-done:
			var exit *exec.ExitError
			if err != nil && !(errors.As(err, &exit) && exit.Exited() && exit.ExitCode() == 0) {
				errs = append(errs, fmt.Errorf("%s exited: %w", filepath.Base(cmd.Path), err))
			}
		case <-time.After(timeout):
			_ = cmd.Process.Kill()
			<-done
			errs = append(errs, fmt.Errorf("%s did not exit within %s of %s; killed", filepath.Base(cmd.Path), timeout, sig))
		}
	}
	p.cmds, p.done = nil, nil
	return errors.Join(errs...)
}

// waitFor polls check every 100 ms until it returns true, done reports an
// exit, or timeout passes; logPath is quoted on failure.
func waitFor(ctx context.Context, what, logPath string, timeout time.Duration, done <-chan error, check func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if check() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not ready after %s: %s", what, timeout, logTail(logPath))
		}
		select {
		case err := <-done:
			return fmt.Errorf("%s exited before it was ready (%v): %s", what, err, logTail(logPath))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func logTail(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// ready is true when url answers 200 and, with metric, that gauge is 1.
func ready(ctx context.Context, url, metric string) bool {
	code, _, err := httpGet(ctx, url+"/readyz")
	if err != nil || code != 200 {
		return false
	}
	if metric == "" {
		return true
	}
	code, body, err := httpGet(ctx, url+"/metrics")
	return err == nil && code == 200 && metricSum(body, metric) >= 1
}

// harrierMonitor starts the harrier-based monitors: agent (with a backend),
// run and events. dir is a fresh directory for this run; profile, when
// set, is where the monitor writes a CPU profile (PROFILE-backend.pprof for
// the agent's backend).
func (b *bench) startHarrier(ctx context.Context, name, dir, profile string) (*running, error) {
	var p procs
	fail := func(err error) (*running, error) {
		return nil, errors.Join(err, p.stopAll(syscall.SIGINT, b.o.stopTimeout))
	}
	prof := func(path string) []string {
		if path == "" {
			return nil
		}
		return []string{"--cpuprofile", path}
	}
	r := &running{name: name}
	switch name {
	case monEvents:
		logPath := filepath.Join(dir, "events.log")
		args := append([]string{"events", "--discard", "--stats"}, prof(profile)...)
		cmd, done, err := p.start(logPath, b.o.harrier, args...)
		if err != nil {
			return fail(err)
		}
		err = waitFor(ctx, "harrier events", logPath, b.o.readyTimeout, done, func() bool {
			data, _ := os.ReadFile(logPath)
			return strings.Contains(string(data), `msg="probe attached"`) && strings.Contains(string(data), "probe=syscalls")
		})
		if err != nil {
			return fail(err)
		}
		r.cpuPIDs, r.memPID = []int{cmd.Process.Pid}, cmd.Process.Pid

	case monRun:
		metrics, err := benchutil.FreeAddr("tcp")
		if err != nil {
			return fail(err)
		}
		api, err := benchutil.FreeAddr("tcp")
		if err != nil {
			return fail(err)
		}
		ingest, err := benchutil.FreeAddr("udp")
		if err != nil {
			return fail(err)
		}
		// The default config but for the data directory and the listening
		// addresses (other Harriers may run on this machine).
		cfg := filepath.Join(dir, "run.yaml")
		conf := fmt.Sprintf("dataDir: %s/data\nmetricsAddr: %s\nbackend:\n  apiAddr: %s\n  ingestAddr: %s\n", dir, metrics, api, ingest)
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			return fail(fmt.Errorf("run config: %w", err))
		}
		logPath := filepath.Join(dir, "run.log")
		args := append([]string{"run", "-c", cfg}, prof(profile)...)
		cmd, done, err := p.start(logPath, b.o.harrier, args...)
		if err != nil {
			return fail(err)
		}
		r.metrics = "http://" + metrics
		if err := waitFor(ctx, "harrier run", logPath, b.o.readyTimeout, done, func() bool {
			return ready(ctx, r.metrics, "harrier_uplink_connected")
		}); err != nil {
			return fail(err)
		}
		r.cpuPIDs, r.memPID = []int{cmd.Process.Pid}, cmd.Process.Pid

	case monAgent:
		pki, err := b.ensurePKI(ctx)
		if err != nil {
			return fail(err)
		}
		api, err := benchutil.FreeAddr("tcp")
		if err != nil {
			return fail(err)
		}
		ingest, err := benchutil.FreeAddr("udp")
		if err != nil {
			return fail(err)
		}
		metrics, err := benchutil.FreeAddr("tcp")
		if err != nil {
			return fail(err)
		}
		bcfg := filepath.Join(dir, "backend.yaml")
		bconf := fmt.Sprintf("dataDir: %s/backend\nbackend:\n  apiAddr: %s\n  ingestAddr: %s\n  caFile: %s/ca.crt\n  certFile: %s/backend.crt\n  keyFile: %s/backend.key\n",
			dir, api, ingest, pki, pki, pki)
		if err := os.WriteFile(bcfg, []byte(bconf), 0o600); err != nil {
			return fail(fmt.Errorf("backend config: %w", err))
		}
		blog := filepath.Join(dir, "backend.log")
		bprof := ""
		if profile != "" {
			bprof = strings.TrimSuffix(profile, ".pprof") + "-backend.pprof"
		}
		bcmd, bdone, err := p.start(blog, b.o.harrier, append([]string{"backend", "-c", bcfg}, prof(bprof)...)...)
		if err != nil {
			return fail(err)
		}
		if err := waitFor(ctx, "harrier backend", blog, b.o.readyTimeout, bdone, func() bool {
			return ready(ctx, "http://"+api, "")
		}); err != nil {
			return fail(err)
		}
		// The default agent config but for the data directory, the
		// metrics address and the uplink to the bench's backend.
		acfg := filepath.Join(dir, "agent.yaml")
		aconf := fmt.Sprintf("dataDir: %s/agent\nmetricsAddr: %s\nuplink:\n  addr: %s\n  serverName: 127.0.0.1\n  agentID: %s\n  caFile: %s/ca.crt\n  certFile: %s/%s.crt\n  keyFile: %s/%s.key\n",
			dir, metrics, ingest, agentID, pki, pki, agentID, pki, agentID)
		if err := os.WriteFile(acfg, []byte(aconf), 0o600); err != nil {
			return fail(fmt.Errorf("agent config: %w", err))
		}
		alog := filepath.Join(dir, "agent.log")
		acmd, adone, err := p.start(alog, b.o.harrier, append([]string{"agent", "-c", acfg}, prof(profile)...)...)
		if err != nil {
			return fail(err)
		}
		r.metrics = "http://" + metrics
		if err := waitFor(ctx, "harrier agent", alog, b.o.readyTimeout, adone, func() bool {
			return ready(ctx, r.metrics, "harrier_uplink_connected")
		}); err != nil {
			return fail(err)
		}
		r.cpuPIDs = []int{acmd.Process.Pid, bcmd.Process.Pid}
		r.memPID, r.backendPID = acmd.Process.Pid, bcmd.Process.Pid

	default:
		return nil, fmt.Errorf("monitor %q is not harrier", name)
	}
	r.stop = func() error { return p.stopAll(syscall.SIGINT, b.o.stopTimeout) }
	return r, nil
}

// agentID is the bench agent's certificate name.
const agentID = "bench-node"

// ensurePKI makes the bench's CA, backend and agent certificates with
// `harrier certs` once, in the bench directory.
func (b *bench) ensurePKI(ctx context.Context) (string, error) {
	pki := filepath.Join(b.dir, "pki")
	if _, err := os.Stat(filepath.Join(pki, agentID+".crt")); err == nil {
		return pki, nil
	}
	for _, args := range [][]string{
		{"certs", "init", "--out", pki},
		{"certs", "backend", "--out", pki, "--host", "127.0.0.1"},
		{"certs", "agent", "--out", pki, agentID},
	} {
		if out, err := exec.CommandContext(ctx, b.o.harrier, args...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("harrier %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return pki, nil
}
