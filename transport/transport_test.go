package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testenv"
)

const agent = "agent-1"

// fastClient returns a client config with test-sized timings.
func fastClient(addr string, tlsConf *tls.Config, id string) ClientConfig {
	return ClientConfig{
		Addr:              addr,
		TLS:               tlsConf,
		AgentID:           id,
		BackoffMin:        20 * time.Millisecond,
		BackoffMax:        200 * time.Millisecond,
		HeartbeatInterval: time.Hour,
		PollInterval:      20 * time.Millisecond,
	}
}

func TestHappyPathPriorityExactlyOnce(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, "site")
	sink := newMemSink()
	// Few streams per connection and many batches: completed streams must
	// give their credit back or the client would stall.
	srv, _ := startServer(t, ServerConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS(t), MaxIncomingStreams: 4}, sink)

	const n = 10_000
	src := newSliceSource(makeRecords(n, nil))
	cfg := fastClient(srv.Addr().String(), pki.agentTLS(t, agent, pki), agent)
	cfg.BatchRecords = 100
	cl, _ := startClient(t, cfg, src)
	testenv.WaitFor(t, 20*time.Second, "all records acked", func() bool { return src.left() == 0 })

	order, seen, _, _ := sink.snapshot()
	if len(order) != n || len(seen) != n {
		t.Fatalf("sink got %d records, %d distinct; want %d exactly once", len(order), len(seen), n)
	}
	for seq, c := range seen {
		if c != 1 || seq < 1 || seq > n {
			t.Fatalf("seq %d arrived %d times", seq, c)
		}
	}
	// Arrival order is class order (alerts, findings, events), oldest first within a class.
	for i := 1; i < len(order); i++ {
		a, b := order[i-1], order[i]
		if a.GetClass() > b.GetClass() || (a.GetClass() == b.GetClass() && a.GetSeq() >= b.GetSeq()) {
			t.Fatalf("record %d (seq %d, %v) arrived after seq %d (%v)", i, b.GetSeq(), b.GetClass(), a.GetSeq(), a.GetClass())
		}
	}
	if order[0].GetClass() != api.RecordClass_RECORD_CLASS_ALERT || order[n-1].GetClass() != api.RecordClass_RECORD_CLASS_EVENT {
		t.Fatalf("first %v, last %v: want alerts first and events last", order[0].GetClass(), order[n-1].GetClass())
	}
	st := cl.Stats()
	if st.RecordsAcked != n || st.BatchesSent < n/100 || !st.Connected || st.BytesSent == 0 || st.Reconnects != 0 {
		t.Fatalf("client stats %+v", st)
	}
	if ss := srv.Stats(); ss.Records != n || ss.BadFrames != 0 || ss.Unauthenticated != 0 {
		t.Fatalf("server stats %+v", ss)
	}
}

func TestServerRestartLosesNothing(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, "site")
	sink := newMemSink()
	sink.delay = 10 * time.Millisecond // keep batches in flight when the server stops
	srv, stop := startServer(t, ServerConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS(t)}, sink)
	addr := srv.Addr().String()

	const n = 3000
	src := newSliceSource(makeRecords(n, nil))
	cfg := fastClient(addr, pki.agentTLS(t, agent, pki), agent)
	cfg.BatchRecords = 50
	cl, _ := startClient(t, cfg, src)

	testenv.WaitFor(t, 10*time.Second, "first records stored", func() bool { return sink.records() >= 500 })
	stop()
	before := sink.records()
	if before >= n {
		t.Fatalf("everything arrived before the restart (%d); the test needs a slower sink", before)
	}
	// The backend stays down until the client has noticed and begun to redial.
	testenv.WaitFor(t, 10*time.Second, "the client to report the backend down and redial", func() bool {
		st := cl.Stats()
		return !st.Connected && st.Reconnects > 0
	})

	srv2, _ := startServer(t, ServerConfig{Addr: addr, TLS: pki.serverTLS(t)}, sink)
	testenv.WaitFor(t, 20*time.Second, "all records acked after restart", func() bool { return src.left() == 0 })

	_, seen, _, _ := sink.snapshot()
	dups := 0
	for seq := uint64(1); seq <= n; seq++ {
		switch c := seen[seq]; {
		case c == 0:
			t.Fatalf("seq %d lost", seq)
		case c > 1:
			dups += c - 1
		}
	}
	st := cl.Stats()
	t.Logf("stored before restart %d, duplicates %d, reconnects %d, after restart %d records", before, dups, st.Reconnects, srv2.Stats().Records)
	if st.Reconnects == 0 || st.LastError == "" {
		t.Fatalf("client stats %+v: want a reconnect and its reason", st)
	}
	if srv2.Stats().Records == 0 {
		t.Fatal("nothing arrived at the restarted server")
	}
}

// TestFailoverToFallbackBackend: a client with two backends (replicas of
// one site) keeps delivering when the one it uses goes away for good: it
// gives that one up after a failed dial and goes on with the other;
// nothing is lost.
func TestFailoverToFallbackBackend(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, "site")
	sink := newMemSink()
	sink.delay = 5 * time.Millisecond
	first, stopFirst := startServer(t, ServerConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS(t)}, sink)
	second, _ := startServer(t, ServerConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS(t)}, sink)
	const n = 2000
	src := newSliceSource(makeRecords(n, nil))
	cfg := fastClient(first.Addr().String(), pki.agentTLS(t, agent, pki), agent)
	cfg.FallbackAddrs = []string{second.Addr().String()}
	cfg.BatchRecords = 50
	cfg.DialTimeout = time.Second
	cl, _ := startClient(t, cfg, src)
	testenv.WaitFor(t, 10*time.Second, "records stored through the first backend", func() bool { return sink.records() >= 300 })
	stopFirst()
	testenv.WaitFor(t, 30*time.Second, "every record acked", func() bool { return src.left() == 0 })
	_, seen, _, _ := sink.snapshot()
	for seq := uint64(1); seq <= n; seq++ {
		if seen[seq] == 0 {
			t.Fatalf("seq %d lost", seq)
		}
	}
	if second.Stats().Records == 0 {
		t.Error("nothing reached the fallback backend")
	}
	if st := cl.Stats(); st.Backend != second.Addr().String() {
		t.Errorf("the client's backend is %q, want the fallback %s", st.Backend, second.Addr())
	}
	t.Logf("first backend %d records, fallback %d", first.Stats().Records, second.Stats().Records)
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	site := newTestPKI(t, "site")
	other := newTestPKI(t, "other")
	sink := newMemSink()
	srv, _ := startServer(t, ServerConfig{Addr: "127.0.0.1:0", TLS: site.serverTLS(t)}, sink)
	addr := srv.Addr().String()

	noCert := site.agentTLS(t, agent, site).Clone()
	noCert.Certificates = nil
	// Go's client withholds a certificate the server's CA list does not
	// name; force it out so the server must reject it itself.
	forced := other.agentTLS(t, agent, site).Clone()
	foreign := forced.Certificates[0]
	forced.Certificates = nil
	forced.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }

	tests := []struct {
		name    string
		tls     *tls.Config
		id      string
		counter func(ServerStats) uint64
		errPart string
	}{
		{"cert from another CA", other.agentTLS(t, agent, site), agent, func(s ServerStats) uint64 { return s.Unauthenticated }, ""},
		{"cert from another CA, sent anyway", forced, agent, func(s ServerStats) uint64 { return s.Unauthenticated }, ""},
		{"no client cert", noCert, agent, func(s ServerStats) uint64 { return s.Unauthenticated }, ""},
		{"expired client cert", site.expiredAgentTLS(t, agent, site), agent, func(s ServerStats) uint64 { return s.Unauthenticated }, ""},
		{"agent_id differs from cert", site.agentTLS(t, "agent-2", site), "agent-3", func(s ServerStats) uint64 { return s.Refused }, "does not match"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.counter(srv.Stats())
			src := newSliceSource(makeRecords(20, nil))
			cl, stop := startClient(t, fastClient(addr, tc.tls, tc.id), src)
			testenv.WaitFor(t, 10*time.Second, "server to count the refusal", func() bool { return tc.counter(srv.Stats()) > before })
			testenv.WaitFor(t, 5*time.Second, "client to see an error", func() bool { return cl.Stats().LastError != "" })
			stop()
			st := cl.Stats()
			if src.left() != 20 || st.RecordsAcked != 0 {
				t.Fatalf("%d of 20 records left, stats %+v: nothing may be released", src.left(), st)
			}
			if !strings.Contains(st.LastError, tc.errPart) {
				t.Fatalf("last error %q, want it to contain %q", st.LastError, tc.errPart)
			}
			t.Logf("client's last error: %s", st.LastError)
		})
	}
	if order, _, hb, _ := sink.snapshot(); len(order) != 0 || len(hb) != 0 {
		t.Fatalf("sink stored %d records and %d heartbeats from unauthenticated or refused agents", len(order), len(hb))
	}
}

func TestBadFramesCloseOnlyTheStream(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, "site")
	sink := newMemSink()
	limits := Limits{MaxFrameBytes: 64 << 10, MaxDecodedBytes: 256 << 10}
	srv, _ := startServer(t, ServerConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS(t), Limits: limits}, sink)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, srv.Addr().String(), pki.agentTLS(t, agent, pki), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")

	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	garbage := make([]byte, 64)
	_, _ = rand.Read(garbage)
	good, err := proto.Marshal(&api.Batch{AgentId: agent})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"not zstd", frameOf(garbage)},
		{"zstd but not protobuf", frameOf(enc.EncodeAll(bytes.Repeat([]byte{0xff}, 100), nil))},
		{"zstd bomb over MaxDecodedBytes", frameOf(enc.EncodeAll(make([]byte, 1<<20), nil))},
		{"header over MaxFrameBytes", append(header(limits.MaxFrameBytes+1), garbage...)},
		{"truncated payload", append(header(100), garbage[:10]...)},
		{"truncated header", []byte{0, 0}},
		{"empty stream", nil},
		{"empty frame", header(0)},
		{"data after the frame", append(frameOf(enc.EncodeAll(good, nil)), 0)},
	}
	for _, tc := range tests {
		str, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatalf("%s: open: %v", tc.name, err)
		}
		_, _ = str.Write(tc.data) // the server may stop reading early
		_ = str.Close()
		_ = str.SetReadDeadline(time.Now().Add(10 * time.Second))
		ack, err := ReadAck(str, Limits{})
		var se *quic.StreamError
		if !errors.As(err, &se) || se.ErrorCode != CodeBadFrame || !se.Remote {
			t.Fatalf("%s: got ack %v, err %v; want the stream reset with CodeBadFrame", tc.name, ack, err)
		}
	}
	testenv.WaitFor(t, 5*time.Second, "bad frames counted", func() bool { return srv.Stats().BadFrames == uint64(len(tests)) })

	// The same connection still delivers a good batch.
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	codec, err := NewCodec(Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	if err := codec.WriteBatch(str, &api.Batch{AgentId: agent, Records: makeRecords(3, nil)}); err != nil {
		t.Fatal(err)
	}
	_ = str.Close()
	_ = str.SetReadDeadline(time.Now().Add(10 * time.Second))
	ack, err := ReadAck(str, Limits{})
	if err != nil || ack.GetError() != "" || len(ack.GetSeqs()) != 3 {
		t.Fatalf("good batch after bad frames: ack %v, err %v", ack, err)
	}
	if ss := srv.Stats(); ss.BadFrames != uint64(len(tests)) || ss.Records != 3 || ss.Connections != 1 {
		t.Fatalf("server stats %+v", ss)
	}

	// A well-formed frame whose spool_id could not be a spool's is refused
	// with a clear error, and nothing in it is stored.
	str, err = conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := codec.WriteBatch(str, &api.Batch{AgentId: agent, SpoolId: "../../x", Records: makeRecords(3, nil)}); err != nil {
		t.Fatal(err)
	}
	_ = str.Close()
	_ = str.SetReadDeadline(time.Now().Add(10 * time.Second))
	ack, err = ReadAck(str, Limits{})
	if err != nil || !strings.Contains(ack.GetError(), "spool_id") || len(ack.GetSeqs()) != 0 {
		t.Fatalf("batch with a malformed spool_id: ack %v, err %v", ack, err)
	}
	if ss := srv.Stats(); ss.Refused != 1 || ss.Records != 3 {
		t.Fatalf("server stats after the malformed spool_id %+v", ss)
	}
}

func TestValidSpoolID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"", true},
		{"0123456789abcdef0123456789abcdef", true},
		{"0123456789ABCDEF0123456789abcdef", false},
		{"0123456789abcdef0123456789abcde", false},
		{"0123456789abcdef0123456789abcdef0", false},
		{"0123456789abcdef\x00123456789abcdef", false},
	} {
		if err := ValidSpoolID(tc.id); (err == nil) != tc.ok {
			t.Errorf("ValidSpoolID(%q) = %v, want ok %v", tc.id, err, tc.ok)
		}
	}
}

func header(n int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(n)) }

func frameOf(payload []byte) []byte { return append(header(len(payload)), payload...) }

func TestBandwidthCap(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, "site")
	sink := newMemSink()
	srv, _ := startServer(t, ServerConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS(t)}, sink)

	// Random base64 compresses to about 3/4: ~100 records of 4 KiB make
	// ~300 KiB of compressed frames.
	const rate = 96 << 10
	recs := makeRecords(100, func(uint64) []string {
		b := make([]byte, 3<<10)
		_, _ = rand.Read(b)
		return []string{base64.StdEncoding.EncodeToString(b)}
	})
	src := newSliceSource(recs)
	cfg := fastClient(srv.Addr().String(), pki.agentTLS(t, agent, pki), agent)
	cfg.BandwidthBytesPerSec = rate
	cfg.BatchRecords = 10
	start := time.Now()
	cl, _ := startClient(t, cfg, src)
	testenv.WaitFor(t, 20*time.Second, "all records acked", func() bool { return src.left() == 0 })
	elapsed := time.Since(start)

	sent := cl.Stats().BytesSent
	if sent < 250<<10 {
		t.Fatalf("only %d bytes sent; the test needs more to measure the cap", sent)
	}
	burst := min(max(float64(rate)/10, minBurstBytes), maxBurstBytes)
	floor := time.Duration((float64(sent) - burst) / rate * 0.9 * float64(time.Second))
	t.Logf("%d compressed bytes at a cap of %d B/s took %v (floor %v)", sent, rate, elapsed, floor)
	if elapsed < floor {
		t.Fatalf("sending %d bytes took %v, faster than the cap allows (%v)", sent, elapsed, floor)
	}
}

func TestHeartbeatsAndGaps(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, "site")
	sink := newMemSink()
	srv, _ := startServer(t, ServerConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS(t)}, sink)

	health := &api.AgentHealth{Version: "test", Node: "edge-17", SpoolRecords: 42, Drops: map[string]uint64{"sensor_queue": 3}}
	gap := &api.Gap{Class: api.RecordClass_RECORD_CLASS_EVENT, FirstSeq: 10, LastSeq: 19, Count: 10}
	gapsTaken := false
	cfg := fastClient(srv.Addr().String(), pki.agentTLS(t, agent, pki), agent)
	cfg.HeartbeatInterval = 50 * time.Millisecond
	cfg.Health = func() *api.AgentHealth { return health }
	cfg.Gaps = func() []*api.Gap { // called only from Run's goroutine
		if gapsTaken {
			return nil
		}
		gapsTaken = true
		return []*api.Gap{gap}
	}
	cl, stop := startClient(t, cfg, newSliceSource(nil))
	// The client counts a heartbeat once it is acknowledged, just after the
	// server has taken it: wait for both sides.
	testenv.WaitFor(t, 10*time.Second, "three heartbeats", func() bool {
		_, _, hb, _ := sink.snapshot()
		return len(hb) >= 3 && cl.Stats().HeartbeatsSent >= 3
	})
	stop()
	_, _, hbs, gaps := sink.snapshot()
	for _, h := range hbs {
		if !proto.Equal(h, health) {
			t.Fatalf("heartbeat carried %v, want %v", h, health)
		}
	}
	if len(gaps) != 1 || !proto.Equal(gaps[0], gap) {
		t.Fatalf("sink got gaps %v, want %v once", gaps, gap)
	}
	if st := cl.Stats(); st.HeartbeatsSent < 3 {
		t.Fatalf("client stats %+v", st)
	}
	if ss := srv.Stats(); ss.Heartbeats < 3 || ss.Records != 0 {
		t.Fatalf("server stats %+v", ss)
	}
}

func TestReconnectResumesWith0RTT(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, "site")
	sink := newMemSink()
	srv, _ := startServer(t, ServerConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS(t)}, sink)
	tlsConf := pki.agentTLS(t, agent, pki) // one session cache for both runs
	tickets := &ticketCache{ClientSessionCache: tlsConf.ClientSessionCache}
	tlsConf.ClientSessionCache = tickets

	cfg := fastClient(srv.Addr().String(), tlsConf, agent)
	_, stop := startClient(t, cfg, newSliceSource(makeRecords(10, nil)))
	testenv.WaitFor(t, 10*time.Second, "first run delivered", func() bool { return sink.records() == 10 })
	testenv.WaitFor(t, 10*time.Second, "a session ticket", func() bool { return tickets.stored.Load() > 0 })
	stop()

	recs := makeRecords(20, nil)[10:]
	src := newSliceSource(recs)
	_, _ = startClient(t, cfg, src)
	testenv.WaitFor(t, 10*time.Second, "second run delivered", func() bool { return src.left() == 0 })
	if ss := srv.Stats(); ss.ZeroRTT == 0 {
		t.Fatalf("server stats %+v: want the second connection resumed with 0-RTT", ss)
	}
}

// ticketCache counts the session tickets the client stores.
type ticketCache struct {
	tls.ClientSessionCache
	stored atomic.Int64
}

func (c *ticketCache) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		c.stored.Add(1)
	}
	c.ClientSessionCache.Put(key, cs)
}

// rawSliceSource is a sliceSource that keeps its records marshaled, as the
// agent's spool does; the records in bad do not decode, and Pending drops
// them as the agent's SpoolSource drops what it cannot decode.
type rawSliceSource struct {
	*sliceSource
	bad          map[uint64]bool
	raw, decoded atomic.Int64
	undecodable  atomic.Int64
}

func (s *rawSliceSource) PendingRaw(ctx context.Context, maxRecords, maxBytes int) ([]RawRecord, error) {
	s.raw.Add(1)
	recs, err := s.sliceSource.Pending(ctx, maxRecords, maxBytes)
	out := make([]RawRecord, len(recs))
	for i, r := range recs {
		stored := proto.Clone(r).(*api.Record)
		stored.Seq = 0
		b, err := proto.Marshal(stored)
		if err != nil {
			return nil, err
		}
		if s.bad[r.GetSeq()] {
			b = []byte{0xff, 0xff, 0xff} // not a protobuf message
		}
		out[i] = RawRecord{Seq: r.GetSeq(), Payload: b}
	}
	return out, err
}

func (s *rawSliceSource) Pending(ctx context.Context, maxRecords, maxBytes int) ([]*api.Record, error) {
	s.decoded.Add(1)
	recs, err := s.sliceSource.Pending(ctx, maxRecords, maxBytes)
	var out []*api.Record
	for _, r := range recs {
		if s.bad[r.GetSeq()] {
			s.undecodable.Add(1)
			_ = s.Acked([]uint64{r.GetSeq()})
			continue
		}
		out = append(out, r)
	}
	return out, err
}

// TestRawSource delivers a RawSource's records as they are stored, and
// recovers from a batch the backend cannot decode by sending it decoded.
func TestRawSource(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		bad  map[uint64]bool
	}{
		{"all decode", nil},
		{"one undecodable", map[uint64]bool{42: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			pki := newTestPKI(t, "site")
			sink := newMemSink()
			srv, _ := startServer(t, ServerConfig{Addr: "127.0.0.1:0", TLS: pki.serverTLS(t)}, sink)
			const n = 1000
			src := &rawSliceSource{sliceSource: newSliceSource(makeRecords(n, nil)), bad: tt.bad}
			cfg := fastClient(srv.Addr().String(), pki.agentTLS(t, agent, pki), agent)
			cfg.BatchRecords = 100
			startClient(t, cfg, src)
			testenv.WaitFor(t, 20*time.Second, "all records acked", func() bool { return src.left() == 0 })
			_, seen, _, _ := sink.snapshot()
			if want := n - len(tt.bad); len(seen) != want {
				t.Fatalf("sink got %d distinct records, want %d", len(seen), want)
			}
			for seq, c := range seen {
				if c != 1 || tt.bad[seq] {
					t.Fatalf("seq %d arrived %d times", seq, c)
				}
			}
			if src.raw.Load() == 0 {
				t.Error("the client never asked for raw records")
			}
			if got := src.undecodable.Load(); got != int64(len(tt.bad)) {
				t.Errorf("%d undecodable records dropped, want %d", got, len(tt.bad))
			}
			if len(tt.bad) == 0 && src.decoded.Load() != 0 {
				t.Errorf("%d decoded batches with nothing refused", src.decoded.Load())
			}
		})
	}
}
