package export

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval"

	"github.com/harrier-sec/harrier/internal/testenv"
)

// otelcolBinary builds (or finds in the cache) the real OpenTelemetry
// Collector of tests/otelcol: the OTLP receiver and the file exporter.
func otelcolBinary(t *testing.T) string { return testenv.BuiltTool(t, "otelcol") }

// collector is a real OpenTelemetry Collector on loopback that writes
// every log record it receives (OTLP JSON lines) into files under dir, a
// new file per start so a restart cannot truncate what came before.
type collector struct {
	t                  *testing.T
	bin, dir           string
	grpcPort, httpPort int
	starts             int
	cmd                *exec.Cmd
	done               chan error
}

func startCollector(t *testing.T) *collector {
	c := &collector{t: t, bin: otelcolBinary(t), dir: t.TempDir()}
	ports := testenv.FreePorts(t, 2)
	c.grpcPort, c.httpPort = ports[0], ports[1]
	c.start()
	t.Cleanup(c.stop)
	return c
}

func (c *collector) start() {
	c.t.Helper()
	c.starts++
	cfg := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc: {endpoint: "127.0.0.1:%d"}
      http: {endpoint: "127.0.0.1:%d"}
exporters:
  file:
    path: %q
    flush_interval: 100ms
service:
  telemetry:
    metrics: {level: none}
    logs: {level: warn}
  pipelines:
    logs: {receivers: [otlp], exporters: [file]}
`, c.grpcPort, c.httpPort, filepath.Join(c.dir, fmt.Sprintf("out-%d.jsonl", c.starts)))
	path := filepath.Join(c.dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		c.t.Fatal(err)
	}
	log, err := os.OpenFile(filepath.Join(c.dir, "collector.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	defer log.Close()
	c.cmd = exec.Command(c.bin, "--config", "file:"+path)
	c.cmd.Stdout, c.cmd.Stderr = log, log
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.done = make(chan error, 1)
	go func(cmd *exec.Cmd, done chan error) { done <- cmd.Wait() }(c.cmd, c.done)
	deadline := time.Now().Add(30 * time.Second)
	for _, port := range []int{c.grpcPort, c.httpPort} {
		for {
			conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
			if err == nil {
				conn.Close()
				break
			}
			exited := false
			select {
			case werr := <-c.done:
				exited, err = true, fmt.Errorf("exited: %v", werr)
			default:
			}
			if exited || time.Now().After(deadline) {
				b, _ := os.ReadFile(filepath.Join(c.dir, "collector.log"))
				c.cmd = nil
				c.t.Fatalf("collector not listening on %d: %v\n%s", port, err, b)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// stop ends the collector the way an operator does (SIGTERM: it drains and
// flushes its file) and waits for it.
func (c *collector) stop() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
		c.t.Error("collector did not stop on SIGTERM")
	}
	c.cmd = nil
}

// received counts the log records in the collector's files by
// harrier.event.id, and checks each body is the Harrier JSON of that alert.
func (c *collector) received() (map[string]int, error) {
	files, err := filepath.Glob(filepath.Join(c.dir, "out-*.jsonl"))
	if err != nil {
		return nil, err
	}
	got := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 64<<20)
		for sc.Scan() {
			line := sc.Bytes()
			var ld logspb.LogsData
			if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(line, &ld); err != nil {
				// The last line may still be being written.
				continue
			}
			for _, rl := range ld.GetResourceLogs() {
				for _, sl := range rl.GetScopeLogs() {
					for _, lr := range sl.GetLogRecords() {
						id := otlpAttr(lr, "harrier.event.id")
						var a api.Alert
						if err := protojson.Unmarshal([]byte(lr.GetBody().GetStringValue()), &a); err != nil || a.GetId() != id {
							return nil, fmt.Errorf("record %q: body is not the alert's Harrier JSON: %v", id, err)
						}
						got[id]++
					}
				}
			}
		}
	}
	return got, nil
}

func otlpAttr(lr *logspb.LogRecord, key string) string {
	for _, kv := range lr.GetAttributes() {
		if kv.GetKey() == key {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

// TestExportToOTelCollector: a real OpenTelemetry Collector (built from
// the module proxy, OTLP receiver and file exporter) receives 3 000 alerts
// over gRPC and over HTTP; it is stopped for 5 s mid-stream and started
// again. Every alert must be in its files; duplicates are counted and
// cannot exceed the records the exporter counted as resent.
func TestExportToOTelCollector(t *testing.T) {
	const total = 3000
	col := startCollector(t)
	for _, proto := range []string{OTLPGRPC, OTLPHTTP} {
		t.Run(proto, func(t *testing.T) {
			col.stop()
			col.start()
			before, err := col.received()
			if err != nil {
				t.Fatal(err)
			}
			src := &memSource{}
			for i := range total {
				a := alertN(i)
				a.Id = proto + "-" + a.Id
				src.add(a)
			}
			oc := &OTLPConfig{Protocol: proto, Endpoint: fmt.Sprintf("127.0.0.1:%d", col.grpcPort), Insecure: true,
				Headers: map[string]string{"X-Site": "test"}}
			if proto == OTLPHTTP {
				oc = &OTLPConfig{Protocol: proto, Endpoint: fmt.Sprintf("http://127.0.0.1:%d/v1/logs", col.httpPort)}
			}
			cfg := Config{Name: "otel-" + proto, Type: TypeOTLP, OTLP: oc, BatchSize: 100, MaxPerSecond: 1000,
				Retry: RetryConfig{Initial: confval.Duration(100 * time.Millisecond), Max: confval.Duration(time.Second)}}
			m, err := New([]Config{cfg}, src, newMemKV(), Options{Poll: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Error(err)
				}
			}()
			count := func() int {
				got, err := col.received()
				if err != nil {
					t.Fatal(err)
				}
				n := 0
				for id := range got {
					if before[id] == 0 {
						n++
					}
				}
				return n
			}
			waitFor(t, 60*time.Second, func() bool { return count() >= 1000 }, m)
			col.stop()
			time.Sleep(5 * time.Second)
			if st := m.Status()[0]; st.State != "retrying" || st.LastError == "" {
				t.Errorf("collector down, yet state %q, last error %q", st.State, st.LastError)
			}
			col.start()
			waitFor(t, 60*time.Second, func() bool { return count() == total }, m)
			got, err := col.received()
			if err != nil {
				t.Fatal(err)
			}
			dups := 0
			for i := range total {
				id := proto + "-" + alertN(i).Id
				switch n := got[id]; {
				case n == 0:
					t.Errorf("%s missing", id)
				case n > 1:
					dups += n - 1
				}
			}
			st := m.Status()[0]
			t.Logf("%s: %d alerts, %d duplicates, %d resent, %d failed attempts; last reply %q", proto, total, dups, st.Resent, st.Failed, m.runners[0].sink.lastReply())
			if uint64(dups) > st.Resent {
				t.Errorf("%d duplicates, more than the %d records counted as resent", dups, st.Resent)
			}
			if st.Failed == 0 || st.DeadLettered != 0 {
				t.Errorf("want failures during the outage and no dead letters: %+v", st)
			}
		})
	}
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool, m *Manager) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out; status %+v", m.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestOTLPRecord: the log record's fields and attributes, field by field.
func TestOTLPRecord(t *testing.T) {
	a := sampleAlert()
	body, err := encodeJSON(a, "1.0")
	if err != nil {
		t.Fatal(err)
	}
	lr := otlpRecord(message{head: a, body: body}, 7)
	if lr.GetTimeUnixNano() != uint64(a.GetLastSeen().AsTime().UnixNano()) || lr.GetObservedTimeUnixNano() != 7 {
		t.Errorf("times: %d, %d", lr.GetTimeUnixNano(), lr.GetObservedTimeUnixNano())
	}
	if lr.GetSeverityNumber() != logspb.SeverityNumber_SEVERITY_NUMBER_ERROR || lr.GetSeverityText() != "high" {
		t.Errorf("severity %v %q", lr.GetSeverityNumber(), lr.GetSeverityText())
	}
	if lr.GetBody().GetStringValue() != string(body) || lr.GetEventName() != "harrier.head" {
		t.Errorf("body/event name: %v %q", lr.GetBody(), lr.GetEventName())
	}
	want := map[string]string{
		"harrier.event.id": "node-a-42", "harrier.detection.id": "sensitive-files", "harrier.head.name": "Sensitive file opened",
		"host.name": "node-a", "k8s.cluster.name": "prod", "k8s.namespace.name": "shop", "k8s.pod.name": "web-0",
		"k8s.pod.uid": "uid-1", "container.id": "0123abcd", "container.name": "web", "container.image.name": "nginx:1.27",
		"process.executable.path": "/usr/bin/cat",
	}
	for k, v := range want {
		if got := otlpAttr(lr, k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	ints := map[string]int64{}
	for _, kv := range lr.GetAttributes() {
		if v, ok := kv.GetValue().GetValue().(*commonpb.AnyValue_IntValue); ok {
			ints[kv.GetKey()] = v.IntValue
		}
	}
	if ints["harrier.head.count"] != 3 || ints["process.pid"] != 4242 {
		t.Errorf("int attributes %v", ints)
	}
	// Empty fields are left out, not sent as "".
	lr = otlpRecord(message{head: &api.Alert{Id: "x"}, body: []byte("{}")}, 0)
	for _, kv := range lr.GetAttributes() {
		if kv.GetKey() != "harrier.event.id" {
			t.Errorf("attribute %s of an empty alert", kv.GetKey())
		}
	}
}

// TestOTLPHTTPReply covers the answers the OTLP/HTTP specification lists.
func TestOTLPHTTPReply(t *testing.T) {
	ok, _ := proto.Marshal(&collogspb.ExportLogsServiceResponse{PartialSuccess: &collogspb.ExportLogsPartialSuccess{RejectedLogRecords: 2, ErrorMessage: "bad"}})
	tests := []struct {
		name, ctype string
		code        int
		body        []byte
		rejected    int64
		wantRej     bool
		wantErr     bool
		replyHas    string
	}{
		{"empty 200", "", 200, nil, 0, false, false, "HTTP 200"},
		{"protobuf partial success", "application/x-protobuf", 200, ok, 2, false, false, "HTTP 200"},
		{"json partial success", "application/json", 200, []byte(`{"partialSuccess":{"rejectedLogRecords":"3"}}`), 3, false, false, "HTTP 200"},
		{"unreadable 200 still delivered", "application/x-protobuf", 200, []byte{0xff, 0xff}, 0, false, false, "not readable"},
		{"400 status json", "application/json", 400, []byte(`{"code":3,"message":"bad log record"}`), 0, true, true, "bad log record"},
		{"413", "text/plain", 413, []byte("too big"), 0, true, true, "too big"},
		{"503 retried", "text/plain", 503, []byte("busy"), 0, false, true, "HTTP 503: busy"},
		{"401 retried", "", 401, nil, 0, false, true, "HTTP 401"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, reply, err := ParseOTLPHTTPReply(tt.code, tt.ctype, tt.body)
			var rej *RejectedError
			if (err != nil) != tt.wantErr || errors.As(err, &rej) != tt.wantRej {
				t.Fatalf("err %v", err)
			}
			if !strings.Contains(reply, tt.replyHas) || resp.GetPartialSuccess().GetRejectedLogRecords() != tt.rejected {
				t.Errorf("reply %q, response %v", reply, resp)
			}
		})
	}
}

func FuzzParseOTLPHTTPReply(f *testing.F) {
	ok, _ := proto.Marshal(&collogspb.ExportLogsServiceResponse{PartialSuccess: &collogspb.ExportLogsPartialSuccess{RejectedLogRecords: 2, ErrorMessage: "bad"}})
	f.Add(200, "application/x-protobuf", ok)
	f.Add(400, "application/json", []byte(`{"code":3,"message":"bad\nrecord"}`))
	f.Add(503, "text/plain; charset=utf-8", []byte("\xff\x00busy"))
	f.Fuzz(func(t *testing.T, code int, ctype string, body []byte) {
		resp, reply, err := ParseOTLPHTTPReply(code, ctype, body)
		if strings.ContainsAny(reply, "\n") || len(reply) > 600 {
			t.Fatalf("reply must be one bounded line: %q", reply)
		}
		if (code >= 200 && code < 300) != (err == nil) || (err == nil) != (resp != nil) {
			t.Fatalf("code %d: response %v, err %v", code, resp, err)
		}
	})
}

// TestOTLPConfig: bad configs are clear errors at load; secrets come from
// files and are not shown in the target.
func TestOTLPConfig(t *testing.T) {
	bad := []struct {
		cfg  OTLPConfig
		want string
	}{
		{OTLPConfig{Protocol: "udp", Endpoint: "x:1"}, "must be grpc or http"},
		{OTLPConfig{Protocol: OTLPGRPC, Endpoint: "http://x:4317"}, "grpc wants host:port"},
		{OTLPConfig{Protocol: OTLPHTTP, Endpoint: "collector:4318"}, "http wants the logs URL"},
		{OTLPConfig{Protocol: OTLPHTTP, Endpoint: "https://u:p@c/v1/logs"}, "must not carry credentials"},
		{OTLPConfig{Protocol: OTLPHTTP, Endpoint: "http://c/v1/logs", Insecure: true}, "applies to grpc"},
		{OTLPConfig{Protocol: OTLPGRPC, Endpoint: "c:4317", Headers: map[string]string{"Authorization": "Bearer x"}}, "headerFiles"},
		{OTLPConfig{Protocol: OTLPGRPC, Endpoint: "c:4317", Insecure: true, TLS: TLSConfig{CAFile: "/x"}}, "exclude each other"},
	}
	for _, b := range bad {
		err := Config{Name: "o", Type: TypeOTLP, OTLP: &b.cfg}.Validate()
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%+v: error %v, want %q", b.cfg, err, b.want)
		}
	}
	if err := (Config{Name: "o", Type: TypeOTLP}).Validate(); err == nil || !strings.Contains(err.Error(), "needs an otlp: section") {
		t.Errorf("missing section: %v", err)
	}
	key := writeSecret(t, "Bearer s3cret-token")
	c := Config{Name: "o", Type: TypeOTLP, OTLP: &OTLPConfig{Protocol: OTLPHTTP, Endpoint: "https://c.example/v1/logs?k=v", HeaderFiles: map[string]string{"Authorization": key}}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := newSink(c.withDefaults(), "h", "v")
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if got := s.(*otlpSink).headers["authorization"]; got != "Bearer s3cret-token" {
		t.Errorf("header from file: %q", got)
	}
	if tg := c.target(); strings.Contains(tg, "k=v") || strings.Contains(tg, "s3cret") {
		t.Errorf("target shows secrets: %q", tg)
	}
	c.OTLP.HeaderFiles["Authorization"] = filepath.Join(t.TempDir(), "missing")
	if _, err := newSink(c.withDefaults(), "h", "v"); err == nil || !strings.Contains(err.Error(), "otlp.headerFiles[Authorization]") {
		t.Errorf("missing secret file: %v", err)
	}
}
