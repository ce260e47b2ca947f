package agent

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/analytics"
	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/store"
	"github.com/harrier-sec/harrier/transport"
)

// stormExec is what the sensor emits for one fork+exec+wait of /bin/true
// (tests/bench/loadgen -workload exec), shaped after `harrier events`
// output on a test VM: the parent's fork, the child's exec and its exit.
// As the sensor does, events of one process share their Process,
// Ancestry and Namespaces blocks (every fork shares the parent's, the
// exec and exit of one child share the child's), and every process's
// Ancestor message is shared by its descendants' events.
type stormExec [3]*api.Event

// stormPool builds n distinct exec triples from one parent process.
func stormPool(n int) []stormExec {
	base := time.Date(2026, 12, 6, 4, 51, 54, 0, time.UTC)
	ts := func(d time.Duration) *timestamppb.Timestamp { return timestamppb.New(base.Add(d)) }
	// A realistic long ancestor argument (a supervisor's --env JSON), cut
	// at the sensor's maxArgBytes as the process cache does.
	env := `{"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", ` +
		strings.Repeat(`"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", `, 20) + `}`
	env = env[:900]
	ancestors := []*api.Ancestor{
		{Pid: 7209, Exe: "/usr/bin/bash", Args: []string{"bash", "/dev/fd/3"}, StartTime: ts(-3 * time.Second)},
		{Pid: 7208, Exe: "/usr/bin/bash", Args: []string{"bash", "/dev/fd/3"}, StartTime: ts(-3 * time.Second)},
		{Pid: 5581, Exe: "/usr/bin/bash", Args: []string{"bash", "/dev/fd/3"}, StartTime: ts(-69 * time.Second)},
		{Pid: 5580, Exe: "/usr/local/bin/supervisor", Args: []string{"supervisor", "--uid", "0", "--env", env}, StartTime: ts(-69 * time.Second)},
		{Pid: 1, Exe: "/sbin/init", Args: []string{"/sbin/init", "splash"}, StartTime: ts(-14 * time.Hour)},
	}
	ns := &api.Namespaces{Pid: 4026531836, Mnt: 4026531832, Net: 4026531833}
	parent := &api.Process{
		Pid: 7261, Tgid: 7258, Ppid: 7209, Comm: "loadgen", Exe: "/tmp/bench/loadgen",
		Args: []string{"./loadgen", "-workload", "exec", "-n", "200000"}, Cwd: "/tmp/bench",
		StartTime: ts(-20 * time.Millisecond), Cgroup: "/system.slice/bench.service",
	}
	parentAncestor := &api.Ancestor{Pid: parent.Tgid, Exe: parent.Exe, Args: parent.Args, StartTime: parent.StartTime}
	chain := append([]*api.Ancestor{parentAncestor}, ancestors...)
	pool := make([]stormExec, n)
	for i := range pool {
		pid := uint32(8000 + i)
		at := time.Duration(i) * time.Millisecond
		child := &api.Process{
			Pid: pid, Tgid: pid, Ppid: parent.Tgid, Comm: "true", Exe: "/usr/bin/true", Args: []string{"/bin/true"},
			Cwd: "/tmp/bench", StartTime: ts(at), Cgroup: parent.Cgroup,
		}
		// The sensor builds a new ancestry slice for every new process; the
		// messages in it are its process cache's, shared (proc.AncestorChain).
		childAncestry := slices.Clone(chain)
		ev := func(kind api.EventKind, p *api.Process, anc []*api.Ancestor, d time.Duration) *api.Event {
			return &api.Event{Time: ts(at + d), Node: "bench-node", Kind: kind, Process: p, Ancestry: anc, Namespaces: ns}
		}
		fork := ev(api.EventKind_EVENT_KIND_FORK, parent, ancestors, 0)
		fork.Detail = &api.Event_Fork{Fork: &api.Fork{ChildPid: pid, ChildTgid: pid}}
		exec := ev(api.EventKind_EVENT_KIND_EXEC, child, childAncestry, 300*time.Microsecond)
		exec.Detail = &api.Event_Exec{Exec: &api.Exec{Filename: "/bin/true"}}
		exit := ev(api.EventKind_EVENT_KIND_EXIT, child, childAncestry, 600*time.Microsecond)
		exit.Detail = &api.Event_Exit{Exit: &api.Exit{}}
		pool[i] = stormExec{fork, exec, exit}
	}
	return pool
}

// benchPool exceeds the pipeline's queue several times over, so an event is
// never re-sent (and its time rewritten) while still queued.
const benchPool = 8192

// BenchmarkPipelineExec is the agent's user-space cost per exec of an exec
// storm after the sensor: pod context, detections with the built-in rules,
// baselines and de-duplication, the spool (real segment files and Badger in
// a temp dir, fsync per batch) and, with uplink, the uplink's side: reading
// the spool, encoding zstd batches as transport.Client does and acking
// (everything but QUIC). One op is one exec (fork, exec and exit events).
// Raw events are not capped (spool.maxEventsPerSec -1): below the default
// cap of 1000/s every exec is spooled and shipped, which is the cost a
// node pays per exec.
func BenchmarkPipelineExec(b *testing.B) {
	for _, bc := range []struct {
		name   string
		uplink uplinkMode
		rate   int // execs per second, 0 for as fast as the pipeline goes
	}{
		{"spool", noUplink, 0}, {"spool+uplink", drainOnly, 0},
		{"spool+uplink/300persec", drainOnly, 300}, {"spool+quic/300persec", overQUIC, 300},
	} {
		b.Run(bc.name, func(b *testing.B) { benchPipeline(b, bc.uplink, bc.rate) })
	}
}

// uplinkMode says what takes the spooled records.
type uplinkMode int

const (
	noUplink  uplinkMode = iota
	drainOnly            // drainUplink: the client's spool side, no network
	// overQUIC: transport.Client to a transport.Server in this process
	// over loopback, whose sink acks at once; the CPU then includes the
	// receiving end's QUIC.
	overQUIC
)

// stormDrain is how often the sensor drains its ring buffer under a steady
// storm (sensor.flushInterval's default): events arrive in bursts.
const stormDrain = 25 * time.Millisecond

// benchPipeline runs b.N execs through the pipeline. With a rate they come
// in bursts every stormDrain, as from the sensor, and the figure to read is
// cpu-ns/op: it then includes what a steady storm costs in wake-ups (timers,
// goroutine hand-offs, fsyncs, uplink round trips), which a flat-out run
// amortises away. Run it with -benchtime=1500x or so (5 s at 300/s).
func benchPipeline(b *testing.B, mode uplinkMode, rate int) {
	dir := b.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := Config{DataDir: dir}
	cfg.Sensor.Node = "bench-node"
	cfg = WithDefaults(cfg)
	kinds, err := api.ParseKinds(cfg.Spool.EventKinds)
	if err != nil {
		b.Fatal(err)
	}
	engine, err := NewEngine(cfg, log)
	if err != nil {
		b.Fatal(err)
	}
	spool, err := store.Open(store.Config{Dir: filepath.Join(dir, "spool"), QuotaBytes: cfg.Spool.QuotaBytes}, log)
	if err != nil {
		b.Fatal(err)
	}
	defer spool.Close()
	codec, err := transport.NewCodec(transport.Limits{})
	if err != nil {
		b.Fatal(err)
	}
	defer codec.Close()
	pool := stormPool(benchPool)

	events := make(chan *api.Event, 16384)
	var stats atomic.Pointer[analytics.Stats]
	var capped atomic.Uint64
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "bench"})
	notify := make(chan struct{}, 1)
	wake := func() {
		select {
		case notify <- struct{}{}:
		default:
		}
	}
	piped := make(chan error, 1)
	go func() {
		piped <- pipeline(events, func(*api.Event) {}, nil, nil, nil, engine, kinds, -1, spool, wake, &stats, &capped, latency, func(*api.Alert) {}, log)
	}()
	ctx, stop := context.WithCancel(context.Background())
	drained := make(chan error, 1)
	switch mode {
	case noUplink:
		drained <- nil
	case drainOnly:
		go func() { drained <- drainUplink(ctx, NewSpoolSource(spool), codec, notify) }()
	case overQUIC:
		client := benchQUIC(b, ctx, dir, spool, log)
		go func() {
			for range notify {
				client.Notify()
			}
		}()
		go func() { drained <- client.Run(ctx) }()
	}

	b.ReportAllocs()
	cpu0 := testenv.CPUTime(b)
	b.ResetTimer()
	start := time.Now()
	perBurst := max(1, rate*int(stormDrain)/int(time.Second))
	for i := 0; b.Loop(); i++ {
		if rate > 0 && i%perBurst == 0 {
			time.Sleep(time.Until(start.Add(time.Duration(i/perBurst) * stormDrain)))
		}
		for _, ev := range pool[i%len(pool)] {
			// Fresh, increasing times, as a running sensor gives.
			t := start.Add(time.Duration(i) * time.Microsecond)
			ev.Time.Seconds, ev.Time.Nanos = t.Unix(), int32(t.Nanosecond())
			ev.Seq = uint64(i)
			events <- ev
		}
	}
	close(events)
	if err := <-piped; err != nil {
		b.Fatal(err)
	}
	if mode == overQUIC {
		close(notify) // the pipeline, its only sender, has returned
		// Delivered means acked: wait for the spool to empty.
		for deadline := time.Now().Add(30 * time.Second); spool.Stats().LiveBytes > 0 && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
	}
	stop()
	if err := <-drained; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	// CPU time of the whole process (pipeline, spool, uplink, GC) is the
	// figure that matters on a shared node; wall time on a busy machine is not.
	b.ReportMetric(float64(testenv.CPUTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
	if st := stats.Load(); st != nil && st.Alerts > 0 {
		b.Errorf("%d alerts from an exec storm of /bin/true", st.Alerts)
	}
}

// drainUplink does what transport.Client does with the spool per batch,
// without the network: read pending records, encode the frame, ack them;
// when nothing is pending, wait for a notification or the client's poll
// interval. It returns once ctx is done and nothing is left.
func drainUplink(ctx context.Context, src *SpoolSource, codec *transport.Codec, notify <-chan struct{}) error {
	for {
		recs, err := src.PendingRaw(ctx, transport.DefaultBatchRecords, transport.DefaultBatchBytes)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			select {
			case <-notify:
				continue
			case <-ctx.Done():
				if recs, err = src.PendingRaw(ctx, 1, 1); err != nil || len(recs) == 0 {
					return err
				}
				continue
			case <-time.After(transport.DefaultPollInterval):
				continue
			}
		}
		b := &api.Batch{AgentId: "bench-node", SpoolId: "0123456789abcdef0123456789abcdef", Sent: timestamppb.Now()}
		if _, err := codec.EncodeRawBatch(b, recs); err != nil {
			return err
		}
		seqs := make([]uint64, len(recs))
		for i, r := range recs {
			seqs[i] = r.Seq
		}
		if err := src.Acked(seqs); err != nil {
			return err
		}
	}
}

// benchQUIC starts a transport.Server in this process whose sink acks every
// record, and returns a client for spool's records.
func benchQUIC(b *testing.B, ctx context.Context, dir string, spool *store.Spool, log *slog.Logger) *transport.Client {
	pki := filepath.Join(dir, "pki")
	caCert, caKey, err := transport.InitCA(pki)
	if err != nil {
		b.Fatal(err)
	}
	srvCert, srvKey, err := transport.IssueServer(caCert, caKey, []string{"127.0.0.1"}, time.Hour)
	if err == nil {
		err = transport.WriteFiles(pki, "server", srvCert, srvKey)
	}
	if err == nil {
		err = transport.IssueAgentCert(pki, "bench-node", "agent")
	}
	if err != nil {
		b.Fatal(err)
	}
	ca := filepath.Join(pki, "ca.crt")
	srvTLS, err := transport.ServerTLS(filepath.Join(pki, "server.crt"), filepath.Join(pki, "server.key"), ca)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := transport.NewServer(transport.ServerConfig{Addr: "127.0.0.1:0", TLS: srvTLS}, ackAll{}, log)
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ctx) }()
	b.Cleanup(func() { _ = srv.Close(); <-served })
	cliTLS, err := transport.ClientTLS(filepath.Join(pki, "agent.crt"), filepath.Join(pki, "agent.key"), ca, "127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}
	client, err := transport.NewClient(transport.ClientConfig{
		Addr: srv.Addr().String(), TLS: cliTLS, AgentID: "bench-node", SpoolID: spool.ID(),
	}, NewSpoolSource(spool), log)
	if err != nil {
		b.Fatal(err)
	}
	return client
}

// ackAll is a backend that stores nothing and acks everything.
type ackAll struct{}

func (ackAll) Store(_ context.Context, _ string, b *api.Batch) ([]uint64, error) {
	seqs := make([]uint64, len(b.GetRecords()))
	for i, r := range b.GetRecords() {
		seqs[i] = r.GetSeq()
	}
	return seqs, nil
}
