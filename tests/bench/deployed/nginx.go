package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/harrier-sec/harrier/tests/bench/internal/benchutil"
)

// nginxServer is Debian's nginx serving one small static file on
// 127.0.0.1, with its config, logs, pid file and temp paths in the bench
// directory.
type nginxServer struct {
	url  string
	pids []int // master and workers
	p    procs
}

// staticSize is the served file's size: a small page.
const staticSize = 4096

func startNginx(ctx context.Context, dir string, o options) (*nginxServer, error) {
	root := filepath.Join(dir, "nginx")
	www := filepath.Join(root, "www")
	for _, d := range []string{www, filepath.Join(root, "logs"), filepath.Join(root, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("nginx: %w", err)
		}
	}
	page := make([]byte, staticSize*3/4)
	_, _ = rand.Read(page)
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte(base64.StdEncoding.EncodeToString(page)), 0o644); err != nil {
		return nil, fmt.Errorf("nginx: %w", err)
	}
	addr, err := benchutil.FreeAddr("tcp")
	if err != nil {
		return nil, err
	}
	// Debian's nginx.conf as far as serving a static file goes: worker per
	// CPU, sendfile, access log on.
	conf := fmt.Sprintf(`worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log;
events { worker_connections 4096; }
http {
	include /etc/nginx/mime.types;
	default_type application/octet-stream;
	sendfile on;
	tcp_nopush on;
	access_log %[1]s/logs/access.log;
	client_body_temp_path %[1]s/tmp/body;
	proxy_temp_path %[1]s/tmp/proxy;
	fastcgi_temp_path %[1]s/tmp/fastcgi;
	uwsgi_temp_path %[1]s/tmp/uwsgi;
	scgi_temp_path %[1]s/tmp/scgi;
	server {
		listen %[2]s;
		root %[3]s;
	}
}
`, root, addr, www)
	cfg := filepath.Join(root, "nginx.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("nginx: %w", err)
	}
	n := &nginxServer{url: "http://" + addr + "/index.html"}
	logPath := filepath.Join(root, "logs", "stderr.log")
	cmd, done, err := n.p.start(logPath, o.nginx, "-e", filepath.Join(root, "logs", "error.log"), "-p", root, "-c", cfg, "-g", "daemon off;")
	if err != nil {
		return nil, err
	}
	if err := waitFor(ctx, "nginx", logPath, 10*time.Second, done, func() bool {
		code, _, err := httpGet(ctx, n.url)
		return err == nil && code == 200
	}); err != nil {
		return nil, errors.Join(err, n.stop())
	}
	n.pids = append([]int{cmd.Process.Pid}, childrenOf(cmd.Process.Pid)...)
	if len(n.pids) < 2 {
		return nil, errors.Join(errors.New("nginx: no worker processes"), n.stop())
	}
	return n, nil
}

func (n *nginxServer) stop() error { return n.p.stopAll(syscall.SIGQUIT, 10*time.Second) }

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	var kids []int
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			if k, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				kids = append(kids, k)
			}
		}
	}
	return kids
}

// abResult is one ab run.
type abResult struct {
	Seconds   float64
	RPS       float64
	P99Ms     float64
	CPUSecond float64 // ab's own CPU time
}

var (
	abRPS    = regexp.MustCompile(`Requests per second:\s+([0-9.]+)`)
	abTime   = regexp.MustCompile(`Time taken for tests:\s+([0-9.]+) seconds`)
	abFailed = regexp.MustCompile(`Failed requests:\s+([0-9]+)`)
)

// runAB runs `ab -n N -c C` without keep-alive against url and reads the
// rate and, from its CSV of percentiles (ms, three decimals), the p99.
func runAB(ctx context.Context, o options, url, dir string) (abResult, error) {
	csv := filepath.Join(dir, "ab-percentiles.csv")
	cmd := exec.CommandContext(ctx, o.ab, "-q", "-n", strconv.Itoa(o.n["nginx"]), "-c", strconv.Itoa(o.abConcurrency), "-e", csv, url)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return abResult{}, fmt.Errorf("ab: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	out := stdout.String()
	var r abResult
	for _, m := range []struct {
		re  *regexp.Regexp
		dst *float64
	}{{abRPS, &r.RPS}, {abTime, &r.Seconds}} {
		s := m.re.FindStringSubmatch(out)
		if s == nil {
			return abResult{}, fmt.Errorf("ab output without %q: %s", m.re, out)
		}
		*m.dst, _ = strconv.ParseFloat(s[1], 64)
	}
	if s := abFailed.FindStringSubmatch(out); s == nil || s[1] != "0" {
		return abResult{}, fmt.Errorf("ab: failed requests: %s", out)
	}
	b, err := os.ReadFile(csv)
	if err != nil {
		return abResult{}, fmt.Errorf("ab percentiles: %w", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "99,"); ok {
			r.P99Ms, err = strconv.ParseFloat(v, 64)
			if err != nil {
				return abResult{}, fmt.Errorf("ab p99 %q: %w", v, err)
			}
		}
	}
	if r.P99Ms == 0 {
		return abResult{}, fmt.Errorf("ab percentiles: no p99 in %s", csv)
	}
	r.CPUSecond = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	return r, nil
}
