// Command replicas measures the backend's ingest through the real QUIC
// uplink in three setups, one after the other in one run: a single backend
// with its Badger store; one replica over a JetStream stream with one
// nats-server (R1); two replicas over three clustered nats-servers (R3).
// Agents are transport.Clients (mutual TLS, the agent's batching) fed from
// memory with realistic events (internal/benchevents), as many records as
// they can send; each reports records/s, MB/s (marshaled record bytes) and
// the upload-ack latency of each record (from the moment the uplink took it
// from its source to its acknowledgement: one batch's round trip, stream
// publish included), p50 and p99. After the load stops it reports how long
// the replicas took to apply what was left of the stream (their /readyz).
//
//	bash tests/bench/replicas.sh -duration 20s -agents 4
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/backend/replicate"
	"github.com/harrier-sec/harrier/internal/benchevents"
	"github.com/harrier-sec/harrier/tests/bench/internal/benchutil"
	"github.com/harrier-sec/harrier/transport"
)

type options struct {
	natsServer string
	duration   time.Duration
	warmup     time.Duration
	agents     int
	out        string
}

// result is one setup's figures.
type result struct {
	Setup         string  `json:"setup"`
	Agents        int     `json:"agents"`
	Seconds       float64 `json:"seconds"`
	Records       uint64  `json:"records"`
	RecordsPerSec float64 `json:"records_per_s"`
	MBPerSec      float64 `json:"mb_per_s"`
	AckP50Ms      float64 `json:"ack_p50_ms"`
	AckP99Ms      float64 `json:"ack_p99_ms"`
	// CatchUpSec is how long after the load stopped every replica's
	// /readyz said it had applied the stream (0 for the single backend).
	CatchUpSec float64 `json:"catch_up_s"`
}

func main() {
	var o options
	flag.StringVar(&o.natsServer, "nats-server", "", "nats-server binary (tests/nats/build.sh prints it); required")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "measured time per setup")
	flag.DurationVar(&o.warmup, "warmup", 3*time.Second, "load before measuring, per setup")
	flag.IntVar(&o.agents, "agents", 4, "agents (QUIC uplinks), split between the replicas")
	flag.StringVar(&o.out, "out", "", "write the results as JSON here too")
	flag.Parse()
	if o.natsServer == "" {
		fmt.Fprintln(os.Stderr, "replicas: -nats-server is required (bash tests/nats/build.sh prints its path)")
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var results []result
	for _, setup := range []struct {
		name            string
		natsServers     int
		replicas, backs int
	}{
		{"single backend, Badger", 0, 0, 1},
		{"1 replica, JetStream R1", 1, 1, 1},
		{"2 replicas, JetStream R3", 3, 3, 2},
	} {
		r, err := runSetup(o, setup.name, setup.natsServers, setup.replicas, setup.backs, log)
		if err != nil {
			fmt.Fprintf(os.Stderr, "replicas: %s: %v\n", setup.name, err)
			os.Exit(1)
		}
		results = append(results, r)
		fmt.Fprintf(os.Stderr, "%s: %.0f records/s, %.1f MB/s, ack p50 %.1f ms p99 %.1f ms, catch-up %.1f s\n",
			r.Setup, r.RecordsPerSec, r.MBPerSec, r.AckP50Ms, r.AckP99Ms, r.CatchUpSec)
	}
	fmt.Printf("| setup | agents | records/s | MB/s | ack p50 | ack p99 | replicas caught up after the load |\n|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Printf("| %s | %d | %.0f | %.1f | %.1f ms | %.1f ms | %.1f s |\n", r.Setup, r.Agents, r.RecordsPerSec, r.MBPerSec, r.AckP50Ms, r.AckP99Ms, r.CatchUpSec)
	}
	if o.out != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(o.out, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "replicas:", err)
			os.Exit(1)
		}
	}
}

func runSetup(o options, name string, natsServers, streamReplicas, backends int, log *slog.Logger) (result, error) {
	dir, err := os.MkdirTemp("", "harrier-bench-replicas-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	pki := filepath.Join(dir, "pki")
	agentIDs := make([]string, o.agents)
	for i := range agentIDs {
		agentIDs[i] = fmt.Sprintf("bench-agent-%d", i)
	}
	if err := makePKI(pki, agentIDs); err != nil {
		return result{}, err
	}
	var cluster *replicate.Config
	if natsServers > 0 {
		urls, stop, err := startNATS(o.natsServer, filepath.Join(dir, "nats"), natsServers)
		if err != nil {
			return result{}, err
		}
		defer stop()
		cluster = &replicate.Config{Servers: urls, Replicas: streamReplicas}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var ingest, apis []string
	for i := range backends {
		cfg := backend.Config{DataDir: filepath.Join(dir, fmt.Sprintf("backend-%d", i)), APIAddr: "127.0.0.1:0", IngestAddr: "127.0.0.1:0",
			Token: "bench-token-0123456789abcdef0123456789abcdef", TokenDir: filepath.Join(dir, fmt.Sprintf("backend-%d", i)),
			CAFile: filepath.Join(pki, "ca.crt"), CertFile: filepath.Join(pki, "backend.crt"), KeyFile: filepath.Join(pki, "backend.key")}
		if cluster != nil {
			c := *cluster
			c.ReplicaName = fmt.Sprintf("backend-%d", i)
			cfg.Cluster = &c
		}
		svc, err := backend.NewService(cfg, log)
		if err != nil {
			return result{}, err
		}
		wg.Go(func() { _ = svc.Run(ctx) })
		ingest = append(ingest, svc.IngestAddr().String())
		apis = append(apis, "http://"+svc.APIAddr().String())
	}
	if err := waitReady(ctx, apis, time.Minute); err != nil {
		return result{}, err
	}
	sources := make([]*memSource, o.agents)
	cctx, stopClients := context.WithCancel(ctx)
	var cwg sync.WaitGroup
	for i, id := range agentIDs {
		sources[i] = newMemSource(uint64(i+1), id)
		tlsConf, err := transport.ClientTLS(filepath.Join(pki, id+".crt"), filepath.Join(pki, id+".key"), filepath.Join(pki, "ca.crt"), "127.0.0.1")
		if err != nil {
			stopClients()
			return result{}, err
		}
		client, err := transport.NewClient(transport.ClientConfig{Addr: ingest[i%len(ingest)], TLS: tlsConf, AgentID: id,
			SpoolID: fmt.Sprintf("%032x", i+1), BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second}, sources[i], log)
		if err != nil {
			stopClients()
			return result{}, err
		}
		cwg.Go(func() { _ = client.Run(cctx) })
	}
	time.Sleep(o.warmup)
	for _, s := range sources {
		s.measure(true)
	}
	start := time.Now()
	time.Sleep(o.duration)
	for _, s := range sources {
		s.measure(false)
	}
	elapsed := time.Since(start)
	stopClients()
	cwg.Wait()
	stopped := time.Now()
	r := result{Setup: name, Agents: o.agents, Seconds: elapsed.Seconds()}
	var bytes uint64
	var lat []float64
	for _, s := range sources {
		s.mu.Lock()
		r.Records += s.records
		bytes += s.bytes
		lat = append(lat, s.latencies...)
		s.mu.Unlock()
	}
	r.RecordsPerSec = float64(r.Records) / elapsed.Seconds()
	r.MBPerSec = float64(bytes) / 1e6 / elapsed.Seconds()
	r.AckP50Ms = benchutil.Percentile(lat, 50)
	r.AckP99Ms = benchutil.Percentile(lat, 99)
	if cluster != nil {
		if err := waitReady(ctx, apis, 5*time.Minute); err != nil {
			return r, fmt.Errorf("replicas catching up: %w", err)
		}
		r.CatchUpSec = time.Since(stopped).Seconds()
	}
	return r, nil
}

// memSource is an agent's spool in memory: it always has records to send
// and notes when each was taken and acknowledged.
type memSource struct {
	gen *benchevents.Gen
	mu  sync.Mutex
	seq uint64
	// pending are taken but not acknowledged, in order; taken[seq] is when
	// the uplink first took it.
	pending   []*api.Record
	taken     map[uint64]time.Time
	measuring bool
	records   uint64
	bytes     uint64
	latencies []float64 // ms
}

func newMemSource(seed uint64, node string) *memSource {
	return &memSource{gen: benchevents.New(seed, node), taken: map[uint64]time.Time{}}
}

func (s *memSource) measure(on bool) {
	s.mu.Lock()
	s.measuring = on
	s.mu.Unlock()
}

func (s *memSource) Pending(ctx context.Context, maxRecords, maxBytes int) ([]*api.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	size := 0
	for _, r := range s.pending {
		size += proto.Size(r)
	}
	for len(s.pending) < maxRecords && size < maxBytes {
		s.seq++
		r := &api.Record{Seq: s.seq, Class: api.RecordClass_RECORD_CLASS_EVENT,
			Payload: &api.Record_Event{Event: proto.Clone(s.gen.Event()).(*api.Event)}}
		s.pending = append(s.pending, r)
		size += proto.Size(r)
	}
	now := time.Now()
	out := make([]*api.Record, 0, len(s.pending))
	size = 0
	for _, r := range s.pending {
		if len(out) == maxRecords || (len(out) > 0 && size+proto.Size(r) > maxBytes) {
			break
		}
		if _, ok := s.taken[r.GetSeq()]; !ok {
			s.taken[r.GetSeq()] = now
		}
		out = append(out, r)
		size += proto.Size(r)
	}
	return out, nil
}

func (s *memSource) Acked(seqs []uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	acked := make(map[uint64]bool, len(seqs))
	for _, q := range seqs {
		acked[q] = true
	}
	s.pending = slices.DeleteFunc(s.pending, func(r *api.Record) bool {
		if !acked[r.GetSeq()] {
			return false
		}
		if s.measuring {
			s.records++
			s.bytes += uint64(proto.Size(r))
			s.latencies = append(s.latencies, float64(now.Sub(s.taken[r.GetSeq()]).Microseconds())/1000)
		}
		delete(s.taken, r.GetSeq())
		return true
	})
	return nil
}

// makePKI writes ca.crt, backend.crt/.key (for 127.0.0.1) and each
// agent's certificate into dir.
func makePKI(dir string, agents []string) error {
	caCert, caKey, err := transport.NewCA("harrier-bench-ca", 24*time.Hour)
	if err != nil {
		return err
	}
	if err := transport.WriteFiles(dir, "ca", caCert, nil); err != nil {
		return err
	}
	srvCert, srvKey, err := transport.IssueServer(caCert, caKey, []string{"127.0.0.1"}, 24*time.Hour)
	if err != nil {
		return err
	}
	if err := transport.WriteFiles(dir, "backend", srvCert, srvKey); err != nil {
		return err
	}
	for _, id := range agents {
		c, k, err := transport.IssueAgent(caCert, caKey, id, 24*time.Hour)
		if err != nil {
			return err
		}
		if err := transport.WriteFiles(dir, id, c, k); err != nil {
			return err
		}
	}
	return nil
}

// startNATS starts n nats-servers with JetStream on loopback ports,
// clustered when n > 1, and returns their client URLs.
func startNATS(bin, dir string, n int) ([]string, func(), error) {
	var urls, routes []string
	clientPorts, clusterPorts := make([]string, n), make([]string, n)
	for i := range n {
		for _, p := range []*string{&clientPorts[i], &clusterPorts[i]} {
			addr, err := benchutil.FreeAddr("tcp")
			if err != nil {
				return nil, nil, err
			}
			*p = addr[strings.LastIndexByte(addr, ':')+1:]
		}
		urls = append(urls, "nats://127.0.0.1:"+clientPorts[i])
		routes = append(routes, "nats://127.0.0.1:"+clusterPorts[i])
	}
	var cmds []*exec.Cmd
	stop := func() {
		for _, c := range cmds {
			_ = c.Process.Signal(syscall.SIGTERM)
			_ = c.Wait()
		}
	}
	for i := range n {
		args := []string{"-a", "127.0.0.1", "-p", clientPorts[i], "-n", "n" + strconv.Itoa(i), "-js", "-sd", filepath.Join(dir, strconv.Itoa(i))}
		if n > 1 {
			args = append(args, "--cluster_name", "bench", "--cluster", routes[i], "--routes",
				strings.Join(slices.Delete(slices.Clone(routes), i, i+1), ","))
		}
		logf, err := os.Create(filepath.Join(dir + "-" + strconv.Itoa(i) + ".log"))
		if err != nil {
			stop()
			return nil, nil, err
		}
		c := exec.Command(bin, args...)
		c.Stdout, c.Stderr = logf, logf
		if err := c.Start(); err != nil {
			stop()
			return nil, nil, fmt.Errorf("start nats-server: %w", err)
		}
		cmds = append(cmds, c)
	}
	return urls, stop, nil
}

// waitReady waits until every API's /readyz answers 200.
func waitReady(ctx context.Context, apis []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, a := range apis {
		for {
			resp, err := http.Get(a + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return errors.New(a + "/readyz: not ready within " + timeout.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}
