package transport

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
)

const testValidity = time.Hour

// testPKI is a CA with a backend certificate for 127.0.0.1, written to a
// temporary directory the way `harrier certs` would.
type testPKI struct {
	dir           string
	caCert, caKey []byte
}

func newTestPKI(t *testing.T, name string) *testPKI {
	t.Helper()
	p := &testPKI{dir: filepath.Join(t.TempDir(), name)}
	var err error
	if p.caCert, p.caKey, err = NewCA(name+" CA", testValidity); err != nil {
		t.Fatal(err)
	}
	if err := WriteFiles(p.dir, "ca", p.caCert, nil); err != nil {
		t.Fatal(err)
	}
	cert, key, err := IssueServer(p.caCert, p.caKey, []string{"127.0.0.1", "::1", "localhost"}, testValidity)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFiles(p.dir, "server", cert, key); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *testPKI) path(name string) string { return filepath.Join(p.dir, name) }

func (p *testPKI) serverTLS(t *testing.T) *tls.Config {
	t.Helper()
	c, err := ServerTLS(p.path("server.crt"), p.path("server.key"), p.path("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// agentTLS issues a certificate for id and returns a client config trusting
// the backend's CA (server, which may be another PKI than the agent's).
func (p *testPKI) agentTLS(t *testing.T, id string, server *testPKI) *tls.Config {
	t.Helper()
	cert, key, err := IssueAgent(p.caCert, p.caKey, id, testValidity)
	if err != nil {
		t.Fatal(err)
	}
	return p.clientTLS(t, id, cert, key, server)
}

// clientTLS writes an agent's certificate and key as name.crt and name.key
// and returns the client config that uses them and trusts server's CA.
func (p *testPKI) clientTLS(t *testing.T, name string, cert, key []byte, server *testPKI) *tls.Config {
	t.Helper()
	if err := WriteFiles(p.dir, name, cert, key); err != nil {
		t.Fatal(err)
	}
	c, err := ClientTLS(p.path(name+".crt"), p.path(name+".key"), server.path("ca.crt"), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// memSink records what the server stored, in arrival order.
type memSink struct {
	delay time.Duration

	mu         sync.Mutex
	order      []*api.Record
	seen       map[uint64]int
	heartbeats []*api.AgentHealth
	gaps       []*api.Gap
	agents     map[string]int
}

func newMemSink() *memSink {
	return &memSink{seen: map[uint64]int{}, agents: map[string]int{}}
}

func (s *memSink) Store(ctx context.Context, agentID string, b *api.Batch) ([]uint64, error) {
	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.agents[agentID]++
	seqs := make([]uint64, 0, len(b.GetRecords()))
	for _, r := range b.GetRecords() {
		s.order = append(s.order, r)
		s.seen[r.GetSeq()]++
		seqs = append(seqs, r.GetSeq())
	}
	if b.GetHealth() != nil {
		s.heartbeats = append(s.heartbeats, b.GetHealth())
	}
	s.gaps = append(s.gaps, b.GetGaps()...)
	return seqs, nil
}

func (s *memSink) snapshot() (order []*api.Record, seen map[uint64]int, heartbeats []*api.AgentHealth, gaps []*api.Gap) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.order), maps(s.seen), slices.Clone(s.heartbeats), slices.Clone(s.gaps)
}

func (s *memSink) records() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.order)
}

func maps(m map[uint64]int) map[uint64]int {
	c := make(map[uint64]int, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// sliceSource is a spool in memory: Pending returns alerts, then findings,
// then events, oldest first, and only Acked removes records.
type sliceSource struct {
	mu      sync.Mutex
	pending []*api.Record
	acked   int
}

func newSliceSource(recs []*api.Record) *sliceSource {
	s := &sliceSource{pending: slices.Clone(recs)}
	slices.SortStableFunc(s.pending, func(a, b *api.Record) int {
		return cmp.Or(cmp.Compare(a.GetClass(), b.GetClass()), cmp.Compare(a.GetSeq(), b.GetSeq()))
	})
	return s
}

func (s *sliceSource) Pending(_ context.Context, maxRecords, maxBytes int) ([]*api.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*api.Record
	size := 0
	for _, r := range s.pending {
		if len(out) == maxRecords {
			break
		}
		n := proto.Size(r)
		if len(out) > 0 && size+n > maxBytes {
			break
		}
		size += n
		out = append(out, r)
	}
	return out, nil
}

func (s *sliceSource) Acked(seqs []uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	done := make(map[uint64]bool, len(seqs))
	for _, q := range seqs {
		done[q] = true
	}
	before := len(s.pending)
	s.pending = slices.DeleteFunc(s.pending, func(r *api.Record) bool { return done[r.GetSeq()] })
	s.acked += before - len(s.pending)
	return nil
}

func (s *sliceSource) left() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// classOf spreads classes over the sequence so that priority order differs
// from sequence order.
func classOf(seq uint64) api.RecordClass {
	switch seq % 10 {
	case 3:
		return api.RecordClass_RECORD_CLASS_ALERT
	case 5, 7:
		return api.RecordClass_RECORD_CLASS_FINDING
	default:
		return api.RecordClass_RECORD_CLASS_EVENT
	}
}

func makeRecords(n int, args func(seq uint64) []string) []*api.Record {
	recs := make([]*api.Record, n)
	for i := range recs {
		seq := uint64(i + 1)
		r := &api.Record{Seq: seq, Class: classOf(seq)}
		p := &api.Process{Pid: uint32(1000 + i), Comm: "cat", Exe: "/usr/bin/cat", Args: []string{"cat", "/etc/shadow"}}
		if args != nil {
			p.Args = args(seq)
		}
		if r.Class == api.RecordClass_RECORD_CLASS_ALERT {
			r.Payload = &api.Record_Alert{Alert: &api.Alert{Id: fmt.Sprintf("alert-%d", seq), DetectionId: "sensitive-files", Process: p}}
		} else {
			r.Payload = &api.Record_Event{Event: &api.Event{Seq: seq, Node: "edge-17", Process: p}}
		}
		recs[i] = r
	}
	return recs
}

// startServer serves until the test ends or stop is called; stop waits for
// Serve to return.
func startServer(t *testing.T, cfg ServerConfig, sink Sink) (srv *Server, stop func()) {
	t.Helper()
	srv, err := NewServer(cfg, sink, testLogger(t).With("side", "server"))
	if err != nil {
		t.Fatal(err)
	}
	return srv, runUntilStopped(t, "Serve", srv.Serve)
}

// startClient runs a client until the test ends or stop is called; stop
// waits for Run to return.
func startClient(t *testing.T, cfg ClientConfig, src Source) (cl *Client, stop func()) {
	t.Helper()
	cl, err := NewClient(cfg, src, testLogger(t).With("side", "client", "agent_id", cfg.AgentID))
	if err != nil {
		t.Fatal(err)
	}
	return cl, runUntilStopped(t, "Run", cl.Run)
}

// runUntilStopped runs run in a goroutine until the returned stop (also
// called when the test ends) cancels its context; stop waits for run to
// return and fails t if it returned an error.
func runUntilStopped(t *testing.T, name string, run func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: %v", name, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// expiredAgentTLS is agentTLS with a certificate that expired yesterday.
func (p *testPKI) expiredAgentTLS(t *testing.T, id string, server *testPKI) *tls.Config {
	t.Helper()
	tmpl, err := baseTemplate(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	tmpl.URIs = []*url.URL{agentURI(id)}
	cert, key, err := issue(p.caCert, p.caKey, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	return p.clientTLS(t, id+"-expired", cert, key, server)
}
