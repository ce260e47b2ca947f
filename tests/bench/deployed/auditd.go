package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// auditState is the kernel audit configuration found before the benchmark,
// restored after every auditd run and at the end: the rule list and the
// status settings auditd and the bench's rules change.
type auditState struct {
	rules   [][]string // each rule as auditctl arguments
	enabled string
	failure string
	rate    string
	backlog string
	wait    string
}

// auditctl runs auditctl with args.
func auditctl(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "auditctl", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("auditctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// saveAuditState reads `auditctl -s` and `auditctl -l`. It refuses a locked
// configuration (enabled 2), which nothing can change until reboot.
func saveAuditState(ctx context.Context) (*auditState, error) {
	status, err := auditctl(ctx, "-s")
	if err != nil {
		return nil, err
	}
	s := &auditState{}
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "enabled":
			s.enabled = f[1]
		case "failure":
			s.failure = f[1]
		case "rate_limit":
			s.rate = f[1]
		case "backlog_limit":
			s.backlog = f[1]
		case "backlog_wait_time":
			s.wait = f[1]
		}
	}
	if s.enabled == "" {
		return nil, fmt.Errorf("auditctl -s: no enabled flag in %q", status)
	}
	if s.enabled == "2" {
		return nil, errors.New("the audit configuration is locked (enabled 2) until reboot")
	}
	if pid := auditPID(status); pid != 0 {
		return nil, fmt.Errorf("an audit daemon (pid %d) is already running: stop it first", pid)
	}
	list, err := auditctl(ctx, "-l")
	if err != nil {
		return nil, err
	}
	for line := range strings.SplitSeq(list, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line == "No rules" {
			continue
		}
		s.rules = append(s.rules, strings.Fields(line))
	}
	return s, nil
}

// auditPID is the "pid" line of `auditctl -s`.
func auditPID(status string) int {
	for line := range strings.SplitSeq(status, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "pid "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// restore puts the saved rules and settings back.
func (s *auditState) restore(ctx context.Context) error {
	errs := []error{}
	if _, err := auditctl(ctx, "-D"); err != nil {
		errs = append(errs, err)
	}
	for _, r := range s.rules {
		if _, err := auditctl(ctx, r...); err != nil {
			errs = append(errs, err)
		}
	}
	for _, kv := range [][2]string{{"-b", s.backlog}, {"--backlog_wait_time", s.wait}, {"-f", s.failure}, {"-r", s.rate}, {"-e", s.enabled}} {
		if kv[1] == "" {
			continue
		}
		if _, err := auditctl(ctx, kv[0], kv[1]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// auditRules are the rules comparable to what Harrier watches: every
// execve, every connect, and a watch on the watched file; with the buffer
// settings of Debian's /etc/audit/rules.d/audit.rules.
func auditRules(watched string) [][]string {
	return [][]string{
		{"-b", "8192"},
		{"--backlog_wait_time", "60000"},
		{"-f", "1"},
		{"-a", "always,exit", "-F", "arch=b64", "-S", "execve,execveat", "-k", "harrier-bench-exec"},
		{"-a", "always,exit", "-F", "arch=b64", "-S", "connect", "-k", "harrier-bench-connect"},
		{"-w", watched, "-p", "rwa", "-k", "harrier-bench-watch"},
	}
}

// startAuditd starts Debian's auditd in the foreground with Debian's
// auditd.conf but its log in dir, waits until the kernel knows it, and
// loads the bench's rules. Stopping it stops the daemon and restores the
// saved audit configuration.
func (b *bench) startAuditd(ctx context.Context, dir string) (*running, error) {
	if b.audit == nil {
		return nil, errors.New("auditd: audit state not saved")
	}
	conf, err := os.ReadFile("/etc/audit/auditd.conf")
	if err != nil {
		return nil, fmt.Errorf("auditd: %w", err)
	}
	confDir := filepath.Join(dir, "audit")
	if err := os.MkdirAll(confDir, 0o750); err != nil {
		return nil, fmt.Errorf("auditd: %w", err)
	}
	var out strings.Builder
	for line := range strings.SplitSeq(string(conf), "\n") {
		key, _, _ := strings.Cut(line, "=")
		switch strings.TrimSpace(key) {
		case "log_file":
			line = "log_file = " + filepath.Join(confDir, "audit.log")
		case "log_group":
			line = "log_group = root"
		case "tcp_listen_port":
			line = "" // never listen
		}
		out.WriteString(line + "\n")
	}
	if err := os.WriteFile(filepath.Join(confDir, "auditd.conf"), []byte(out.String()), 0o640); err != nil {
		return nil, fmt.Errorf("auditd: %w", err)
	}
	kauditd, err := findKernelThread("kauditd")
	if err != nil {
		return nil, fmt.Errorf("auditd: %w", err)
	}

	var p procs
	stop := func() error {
		// The bench's rules go while auditd still takes the records, so
		// the kernel does not fall back to its log for them.
		var errs []error
		if len(p.cmds) > 0 {
			for _, args := range [][]string{{"-e", b.audit.enabled}, {"-D"}} {
				if _, err := auditctl(context.WithoutCancel(ctx), args...); err != nil {
					errs = append(errs, err)
				}
			}
		}
		errs = append(errs, p.stopAll(syscall.SIGTERM, b.o.stopTimeout), b.audit.restore(context.WithoutCancel(ctx)))
		return errors.Join(errs...)
	}
	logPath := filepath.Join(dir, "auditd.log")
	cmd, done, err := p.start(logPath, "auditd", "-n", "-c", confDir)
	if err != nil {
		return nil, errors.Join(err, stop())
	}
	if err := waitFor(ctx, "auditd", logPath, b.o.readyTimeout, done, func() bool {
		s, err := auditctl(ctx, "-s")
		return err == nil && auditPID(s) == cmd.Process.Pid
	}); err != nil {
		return nil, errors.Join(err, stop())
	}
	if _, err := auditctl(ctx, "-D"); err != nil {
		return nil, errors.Join(err, stop())
	}
	for _, r := range auditRules(b.o.watchedFile) {
		if _, err := auditctl(ctx, r...); err != nil {
			return nil, errors.Join(err, stop())
		}
	}
	if _, err := auditctl(ctx, "-e", "1"); err != nil {
		return nil, errors.Join(err, stop())
	}
	return &running{name: monAuditd, cpuPIDs: []int{cmd.Process.Pid, kauditd}, memPID: cmd.Process.Pid, stop: stop}, nil
}

// auditLog logs what restoring the audit configuration did, at the end.
func auditLog(log *slog.Logger, s *auditState) {
	log.Info("audit configuration restored", "rules", len(s.rules), "enabled", s.enabled, "backlog_limit", s.backlog)
}
