package backend

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/backend/export"
	"github.com/harrier-sec/harrier/internal/testenv"
)

// BenchmarkExport exports b.N alerts from a real store to each kind of
// destination and reports alerts/s and the process's CPU time per 1 000
// alerts. Syslog over TCP and TLS goes to a real rsyslog (another process:
// its CPU is not counted); UDP to a reader in this process; the webhook's
// receiver is an httptest server in this process, so its CPU is counted
// with the exporter's, and so do the OTLP (gRPC and HTTP), Splunk HEC and
// _bulk receivers (written here from the protocols' documentation) and
// franz-go's in-process Kafka cluster (kfake).
//
//	go test -run '^$' -bench BenchmarkExport -benchtime 20000x ./backend/
func BenchmarkExport(b *testing.B) {
	cases := []struct {
		name string
		cfg  func(b *testing.B) export.Config
	}{
		{"syslog-tcp-json", func(b *testing.B) export.Config { return rsyslogConfig(b, "tcp", export.FormatJSON) }},
		{"syslog-tcp-cef", func(b *testing.B) export.Config { return rsyslogConfig(b, "tcp", export.FormatCEF) }},
		{"syslog-tls-ocsf", func(b *testing.B) export.Config { return rsyslogConfig(b, "tls", export.FormatOCSF) }},
		{"syslog-udp-cef", func(b *testing.B) export.Config {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = pc.Close() })
			go func() {
				buf := make([]byte, 65536)
				for {
					if _, _, err := pc.ReadFrom(buf); err != nil {
						return
					}
				}
			}()
			return export.Config{Type: export.TypeSyslog, Format: export.FormatCEF, Syslog: &export.SyslogConfig{Network: "udp", Address: pc.LocalAddr().String()}}
		}},
		{"webhook-json", func(b *testing.B) export.Config {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }))
			b.Cleanup(srv.Close)
			return export.Config{Type: export.TypeWebhook, Webhook: &export.WebhookConfig{URL: srv.URL}}
		}},
		{"file-ocsf", func(b *testing.B) export.Config {
			return export.Config{Type: export.TypeFile, Format: export.FormatOCSF, File: &export.FileConfig{Path: filepath.Join(b.TempDir(), "a.jsonl")}}
		}},
		{"otlp-grpc-json", func(b *testing.B) export.Config {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := grpc.NewServer()
			collogspb.RegisterLogsServiceServer(srv, benchLogsReceiver{})
			go func() { _ = srv.Serve(lis) }()
			b.Cleanup(srv.Stop)
			return export.Config{Type: export.TypeOTLP, OTLP: &export.OTLPConfig{Protocol: export.OTLPGRPC, Endpoint: lis.Addr().String(), Insecure: true}}
		}},
		{"otlp-http-json", func(b *testing.B) export.Config {
			empty, _ := proto.Marshal(&collogspb.ExportLogsServiceResponse{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/x-protobuf")
				_, _ = w.Write(empty)
			}))
			b.Cleanup(srv.Close)
			return export.Config{Type: export.TypeOTLP, OTLP: &export.OTLPConfig{Protocol: export.OTLPHTTP, Endpoint: srv.URL + "/v1/logs"}}
		}},
		{"splunk-hec-ocsf", func(b *testing.B) export.Config {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{"text":"Success","code":0}`)
			}))
			b.Cleanup(srv.Close)
			token := filepath.Join(b.TempDir(), "hec-token")
			if err := os.WriteFile(token, []byte("bench-token\n"), 0o600); err != nil {
				b.Fatal(err)
			}
			return export.Config{Type: export.TypeSplunk, Format: export.FormatOCSF, Splunk: &export.SplunkConfig{URL: srv.URL, TokenFile: token}}
		}},
		{"elasticsearch-bulk-ecs", func(b *testing.B) export.Config {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				// One item per action line: the documents are every second
				// line of the NDJSON body.
				body, _ := io.ReadAll(r.Body)
				n := bytes.Count(body, []byte("\n")) / 2
				var out bytes.Buffer
				out.WriteString(`{"took":1,"errors":false,"items":[`)
				for i := range n {
					if i > 0 {
						out.WriteByte(',')
					}
					out.WriteString(`{"index":{"_index":"harrier-alerts","status":201,"result":"created"}}`)
				}
				out.WriteString(`]}`)
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write(out.Bytes())
			}))
			b.Cleanup(srv.Close)
			return export.Config{Type: export.TypeElastic, Format: export.FormatECS, Elastic: &export.ElasticConfig{URL: srv.URL}}
		}},
		{"kafka-falco", func(b *testing.B) export.Config {
			cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "harrier-alerts"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(cluster.Close)
			return export.Config{Type: export.TypeKafka, Format: export.FormatFalco, Kafka: &export.KafkaConfig{Brokers: cluster.ListenAddrs(), Topic: "harrier-alerts"}}
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			st, err := OpenBadgerStore(b.TempDir(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			ingestAlerts(b, st, 0, b.N)
			cfg := c.cfg(b)
			cfg.Name = c.name
			m, err := export.New([]export.Config{cfg}, st, st.ExportKV(), export.Options{Poll: 10 * time.Millisecond})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			cpu0 := testenv.CPUTime(b)
			b.ResetTimer()
			start := time.Now()
			go func() { done <- m.Run(ctx) }()
			for m.Status()[0].Sent < uint64(b.N) {
				time.Sleep(5 * time.Millisecond)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			cpu := testenv.CPUTime(b) - cpu0
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "alerts/s")
			b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N)*1000, "cpu-ms/1000alerts")
		})
	}
}

// benchLogsReceiver is an OTLP gRPC logs receiver that takes everything.
type benchLogsReceiver struct {
	collogspb.UnimplementedLogsServiceServer
}

func (benchLogsReceiver) Export(context.Context, *collogspb.ExportLogsServiceRequest) (*collogspb.ExportLogsServiceResponse, error) {
	return &collogspb.ExportLogsServiceResponse{}, nil
}

func rsyslogConfig(b *testing.B, network, format string) export.Config {
	var files []string
	scfg := &export.SyslogConfig{Network: network}
	if network == "tls" {
		files, scfg.TLS = makeSyslogPKI(b)
	}
	rs := startRsyslog(b, files)
	scfg.Address = net.JoinHostPort("127.0.0.1", strconv.Itoa(rs.port))
	return export.Config{Type: export.TypeSyslog, Format: format, Syslog: scfg}
}
