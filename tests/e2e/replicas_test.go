package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/natstest"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/transport"
)

// alertSource is an uplink's source of n alerts, each removed once acked.
type alertSource struct {
	mu    sync.Mutex
	left  []*api.Record
	acked int
}

func newAlertSource(agent string, n int) *alertSource {
	s := &alertSource{}
	for seq := 1; seq <= n; seq++ {
		s.left = append(s.left, &api.Record{Seq: uint64(seq), Class: api.RecordClass_RECORD_CLASS_ALERT, Payload: &api.Record_Alert{Alert: &api.Alert{
			Id: fmt.Sprintf("%s-alert-%d", agent, seq), DetectionId: "test-alert", Severity: api.Severity_SEVERITY_HIGH, Node: agent, Count: 1}}})
	}
	return s
}

func (s *alertSource) Pending(_ context.Context, maxRecords, _ int) ([]*api.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.left[:min(maxRecords, len(s.left))]), nil
}

func (s *alertSource) Acked(seqs []uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	before := len(s.left)
	s.left = slices.DeleteFunc(s.left, func(r *api.Record) bool { return slices.Contains(seqs, r.GetSeq()) })
	s.acked += before - len(s.left)
	return nil
}

func (s *alertSource) ackedCount() int { s.mu.Lock(); defer s.mu.Unlock(); return s.acked }

// TestBackendReplicasSurviveKills: three real nats-servers with JetStream,
// two `harrier backend --cluster` processes, and an agent's uplink (its
// certificate from `harrier certs agent`) with the two backends as addr and
// fallbackAddrs, sending 900 alerts. Mid-upload the backend the uplink uses
// is killed with SIGKILL, and so is one nats-server; both start again.
// Every alert is then at both backends' APIs, once each.
func TestBackendReplicasSurviveKills(t *testing.T) {
	bin := buildHarrier(t)
	nodes := natstest.Cluster(t)
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	for _, args := range [][]string{
		{"certs", "init", "--out", pki},
		{"certs", "backend", "--out", pki, "--host", "localhost", "--host", "127.0.0.1"},
		{"certs", "agent", "--out", pki, "edge-r"},
	} {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	type backendProc struct {
		api, ingest string
		d           *daemon
	}
	backends := make([]*backendProc, 2)
	for i := range backends {
		b := &backendProc{api: testenv.FreeAddr(t), ingest: testenv.FreeAddr(t)}
		cfg := filepath.Join(dir, fmt.Sprintf("backend-%d.yaml", i))
		servers, _ := json.Marshal(natstest.URLs(nodes))
		conf := fmt.Sprintf(`dataDir: %s/backend-%d
backend:
  apiAddr: %s
  ingestAddr: %s
  token: e2e-token
  caFile: %s/ca.crt
  certFile: %s/backend.crt
  keyFile: %s/backend.key
  cluster:
    servers: %s
    replicas: 3
    replicaName: replica-%d
`, dir, i, b.api, b.ingest, pki, pki, pki, servers, i)
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		b.d = startRestartable(t, bin, "backend", "-c", cfg)
		backends[i] = b
	}
	for _, b := range backends {
		waitReadyz(t, "http://"+b.api+"/readyz")
	}

	const n = 900
	src := newAlertSource("edge-r", n)
	tlsConf, err := transport.ClientTLS(filepath.Join(pki, "edge-r.crt"), filepath.Join(pki, "edge-r.key"), filepath.Join(pki, "ca.crt"), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := transport.NewClient(transport.ClientConfig{Addr: backends[0].ingest, FallbackAddrs: []string{backends[1].ingest},
		TLS: tlsConf, AgentID: "edge-r", BatchRecords: 20, BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second,
		PollInterval: 50 * time.Millisecond, DialTimeout: 2 * time.Second}, src, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cl.Run(ctx) }()
	defer func() { cancel(); <-done }()

	testenv.WaitFor(t, time.Minute, "300 alerts acked", func() bool { return src.ackedCount() >= 300 })
	// The backend in use dies as a crash would, and a NATS server with it.
	_ = backends[0].d.cmd.Process.Signal(syscall.SIGKILL)
	_ = backends[0].d.cmd.Wait()
	nodes[2].Kill9()
	t.Logf("backend 0 and nats-server %s killed (SIGKILL) at %d alerts acked", nodes[2].Name, src.ackedCount())
	testenv.WaitFor(t, 2*time.Minute, "600 alerts acked (through the other backend)", func() bool { return src.ackedCount() >= 600 })
	nodes[2].Start(t)
	backends[0].d.start(t)
	testenv.WaitFor(t, 2*time.Minute, "every alert acked", func() bool { return src.ackedCount() == n })
	t.Logf("all %d alerts acked; the uplink is on %s", n, cl.Stats().Backend)

	want := make([]string, 0, n)
	for seq := 1; seq <= n; seq++ {
		want = append(want, fmt.Sprintf("edge-r-alert-%d", seq))
	}
	slices.Sort(want)
	for i, b := range backends {
		waitReadyz(t, "http://"+b.api+"/readyz")
		var got []string
		testenv.WaitFor(t, time.Minute, fmt.Sprintf("backend %d's API lists the %d alerts", i, n), func() bool {
			var out struct {
				Alerts []struct {
					ID    string `json:"id"`
					Count string `json:"count"`
				} `json:"alerts"`
			}
			if code, err := tryGetJSON("http://"+b.api+"/api/v1/alerts?limit=1000", "e2e-token", &out); err != nil || code != 200 {
				return false
			}
			got = got[:0]
			for _, a := range out.Alerts {
				if a.Count != "1" {
					t.Errorf("backend %d: alert %s stored %s times", i, a.ID, a.Count)
				}
				got = append(got, a.ID)
			}
			slices.Sort(got)
			return len(got) >= n
		})
		if !slices.Equal(got, want) {
			t.Errorf("backend %d: %d alerts, want the %d sent", i, len(got), n)
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+b.api+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer e2e-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range []string{`harrier_replica_stream_lag_messages{stream="records"} 0`, `harrier_replica_stream_lag_messages{stream="events"} 0`,
			`harrier_replica_messages_skipped_total{stream="records"} 0`, `harrier_replica_messages_skipped_total{stream="events"} 0`} {
			if !strings.Contains(string(metrics), "\n"+line+"\n") {
				t.Errorf("backend %d's /metrics lacks %q", i, line)
			}
		}
	}
}
