package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/transport"
)

const (
	agentID   = "bench-agent"
	certValid = 24 * time.Hour
)

// makePKI writes ca.crt, backend.crt/.key and <agentID>.crt/.key into dir
// with the transport package's PKI functions.
func makePKI(dir string) error {
	caCert, caKey, err := transport.NewCA("harrier-bench-ca", certValid)
	if err != nil {
		return fmt.Errorf("make CA: %w", err)
	}
	if err := transport.WriteFiles(dir, "ca", caCert, nil); err != nil {
		return fmt.Errorf("write CA: %w", err)
	}
	srvCert, srvKey, err := transport.IssueServer(caCert, caKey, []string{"127.0.0.1"}, certValid)
	if err != nil {
		return fmt.Errorf("issue backend certificate: %w", err)
	}
	if err := transport.WriteFiles(dir, "backend", srvCert, srvKey); err != nil {
		return fmt.Errorf("write backend certificate: %w", err)
	}
	agCert, agKey, err := transport.IssueAgent(caCert, caKey, agentID, certValid)
	if err != nil {
		return fmt.Errorf("issue agent certificate: %w", err)
	}
	if err := transport.WriteFiles(dir, agentID, agCert, agKey); err != nil {
		return fmt.Errorf("write agent certificate: %w", err)
	}
	return nil
}

// freeUDPAddr returns a 127.0.0.1 UDP address nothing listens on right now,
// so the agent can be pointed at a backend that starts later.
func freeUDPAddr() (string, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a UDP port: %w", err)
	}
	addr := c.LocalAddr().String()
	if err := c.Close(); err != nil {
		return "", fmt.Errorf("pick a UDP port: %w", err)
	}
	return addr, nil
}

// backendReady is the child's first stdout line.
type backendReady struct {
	Addr string `json:"addr"`
}

// backendResult is the child's last stdout line, written after it stopped.
type backendResult struct {
	Records      uint64            `json:"records"`
	Batches      uint64            `json:"batches"`
	Heartbeats   uint64            `json:"heartbeats"`
	StoreErrors  uint64            `json:"store_errors"`
	AgentRecords uint64            `json:"agent_records_stored"`
	AgentGaps    map[string]uint64 `json:"agent_gaps"`
	VmHWM        uint64            `json:"vm_hwm"`
	// RssAnonPeak is the peak of anonymous RSS sampled every 250 ms: the
	// part of VmHWM that is not Badger's file pages.
	RssAnonPeak uint64 `json:"rss_anon_peak"`
	// RSSByMapping splits the RSS at the end of serving by mapping.
	RSSByMapping map[string]uint64 `json:"rss_by_mapping"`
	StoreDisk    int64             `json:"store_disk_bytes"`
}

// runBackend is the child process: a transport.Server whose Sink is a
// backend.BadgerStore, exactly the backend's ingest path. It serves until
// stdin reaches EOF (the parent closed it or died) or a signal arrives.
func runBackend(ctx context.Context, pkiDir, storeDir, addr string, stdin io.Reader, stdout io.Writer, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		cancel()
	}()
	st, err := backend.OpenBadgerStoreConfig(backend.BadgerConfig{Dir: storeDir}, log)
	if err != nil {
		return fmt.Errorf("open backend store: %w", err)
	}
	defer st.Close()
	tlsConf, err := transport.ServerTLS(filepath.Join(pkiDir, "backend.crt"), filepath.Join(pkiDir, "backend.key"), filepath.Join(pkiDir, "ca.crt"))
	if err != nil {
		return fmt.Errorf("backend TLS: %w", err)
	}
	srv, err := transport.NewServer(transport.ServerConfig{Addr: addr, TLS: tlsConf}, backend.NewSink(st), log)
	if err != nil {
		return fmt.Errorf("backend server: %w", err)
	}
	enc := json.NewEncoder(stdout)
	if err := enc.Encode(backendReady{Addr: srv.Addr().String()}); err != nil {
		_ = srv.Close()
		return fmt.Errorf("report address: %w", err)
	}
	var anonPeak atomic.Uint64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			if m, err := readMem(); err == nil && m.RssAnon > anonPeak.Load() {
				anonPeak.Store(m.RssAnon)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	if err := srv.Serve(ctx); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	<-sampled
	ss := srv.Stats()
	res := backendResult{Records: ss.Records, Batches: ss.Batches, Heartbeats: ss.Heartbeats, StoreErrors: ss.StoreErrors, AgentGaps: map[string]uint64{}, RssAnonPeak: anonPeak.Load()}
	if res.RSSByMapping, err = rssByMapping(); err != nil {
		return err
	}
	agents, err := st.Agents(context.Background())
	if err != nil {
		return fmt.Errorf("list agents: %w", err)
	}
	for _, a := range agents {
		if a.ID != agentID {
			continue
		}
		res.AgentRecords = a.Records
		for c, n := range a.Gaps {
			res.AgentGaps[c.String()] = n
		}
	}
	if m, err := readMem(); err == nil {
		res.VmHWM = m.VmHWM
	}
	if res.StoreDisk, err = diskUsage(storeDir); err != nil {
		return err
	}
	if err := enc.Encode(res); err != nil {
		return fmt.Errorf("report result: %w", err)
	}
	return nil
}

// backendProc is a running backend child.
type backendProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
	Addr  string
	Ready time.Time
}

// startBackend re-executes this binary as the backend on addr and waits
// until it listens.
func startBackend(ctx context.Context, pkiDir, storeDir, addr string, verbose bool, cpuProfile string) (*backendProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	args := []string{"-role", "backend", "-pki", pkiDir, "-store", storeDir, "-addr", addr}
	if verbose {
		args = append(args, "-v")
	}
	if cpuProfile != "" {
		args = append(args, "-cpuprofile", cpuProfile)
	}
	cmd := exec.CommandContext(ctx, self, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("backend stdin: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("backend stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start backend: %w", err)
	}
	b := &backendProc{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	var ready backendReady
	if err := readJSONLine(b.out, &ready); err != nil {
		_ = stdin.Close()
		_ = cmd.Wait()
		return nil, fmt.Errorf("backend did not start: %w", err)
	}
	b.Addr, b.Ready = ready.Addr, time.Now()
	return b, nil
}

// stop closes the child's stdin, reads its result and waits for it.
func (b *backendProc) stop() (backendResult, error) {
	var res backendResult
	_ = b.stdin.Close()
	rerr := readJSONLine(b.out, &res)
	werr := b.cmd.Wait()
	if werr != nil {
		return res, fmt.Errorf("backend exited: %w", werr)
	}
	if rerr != nil {
		return res, fmt.Errorf("backend result: %w", rerr)
	}
	return res, nil
}

func readJSONLine(r *bufio.Reader, v any) error {
	line, err := r.ReadBytes('\n')
	if err != nil && !(errors.Is(err, io.EOF) && len(line) > 0) {
		return fmt.Errorf("read line: %w", err)
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("decode %q: %w", line, err)
	}
	return nil
}
