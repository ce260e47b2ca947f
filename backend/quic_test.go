package backend

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/testenv"
	"github.com/harrier-sec/harrier/transport"
)

// recordSource is an agent spool in memory: records leave only when acked.
type recordSource struct {
	mu      sync.Mutex
	pending []*api.Record
}

func (s *recordSource) Pending(_ context.Context, maxRecords, _ int) ([]*api.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pending[:min(maxRecords, len(s.pending))]), nil
}

func (s *recordSource) Acked(seqs []uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = slices.DeleteFunc(s.pending, func(r *api.Record) bool { return slices.Contains(seqs, r.GetSeq()) })
	return nil
}

func (s *recordSource) left() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// TestInventoryOverQUIC sends snapshot chunks from a transport client over
// real QUIC with mutual TLS on loopback to a transport server writing into a
// BadgerStore, and reads the result back through the HTTP API.
func TestInventoryOverQUIC(t *testing.T) {
	dir := t.TempDir()
	pki := writeTestPKI(t, filepath.Join(dir, "pki"), "leader-1")
	serverTLS, err := transport.ServerTLS(filepath.Join(pki, "server.crt"), filepath.Join(pki, "server.key"), filepath.Join(pki, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := transport.ClientTLS(filepath.Join(pki, "leader-1.crt"), filepath.Join(pki, "leader-1.key"), filepath.Join(pki, "ca.crt"), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}

	m := NewMetrics()
	st := openTestStore(t, BadgerConfig{Dir: filepath.Join(dir, "store"), Metrics: m})
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv, err := transport.NewServer(transport.ServerConfig{Addr: "127.0.0.1:0", TLS: serverTLS}, NewSink(st), log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var g errgroup.Group
	g.Go(func() error { return srv.Serve(ctx) })

	// Snapshot s1 in 3 chunks, s2 missing its part 1 (as after a spool
	// eviction), plus one malformed chunk: s1 must become current and stay.
	src := &recordSource{pending: []*api.Record{
		chunkRec(1, mkChunk("edge", "s1", 0, 3, t0, []*api.InventoryItem{mkItem("Deployment", "shop", "web", "nginx:1.27")},
			[]*api.Finding{mkFinding("f-web", "pss-privileged", api.Severity_SEVERITY_HIGH, "Deployment", "shop", "web")})),
		chunkRec(2, mkChunk("edge", "s1", 1, 3, t0, []*api.InventoryItem{mkItem("DaemonSet", "kube-system", "proxy", "kube-proxy:v1.31.0")}, nil)),
		chunkRec(3, mkChunk("edge", "s1", 2, 3, t0, []*api.InventoryItem{mkItem("Namespace", "", "shop")}, nil)),
		chunkRec(4, mkChunk("edge", "s2", 0, 2, t0.Add(time.Hour), []*api.InventoryItem{mkItem("Pod", "shop", "other")}, nil)),
		chunkRec(5, mkChunk("edge", "s3", 4, 2, t0.Add(time.Hour), nil, nil)),
	}}
	cl, err := transport.NewClient(transport.ClientConfig{
		Addr: srv.Addr().String(), TLS: clientTLS, AgentID: "leader-1", BatchRecords: 2,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		HeartbeatInterval: time.Hour, PollInterval: 20 * time.Millisecond,
	}, src, log)
	if err != nil {
		t.Fatal(err)
	}
	g.Go(func() error { return cl.Run(ctx) })
	testenv.WaitFor(t, 20*time.Second, "every record acked", func() bool { return src.left() == 0 })
	cancel()
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}

	apiSrv := httptest.NewServer(NewAPI(st, APIConfig{Token: testToken, Metrics: m}, nil))
	defer apiSrv.Close()
	ts := &testServer{Server: apiSrv, store: st, metrics: m}
	inv := decodeJSON[inventoryResponse](t, ts.authGet(t, "/api/v1/inventory"))
	var names []string
	for _, it := range inv.Items {
		names = append(names, it.Cluster+"/"+it.Item.Object.Kind+"/"+it.Item.Object.Name)
	}
	if want := []string{"edge/DaemonSet/proxy", "edge/Deployment/web", "edge/Namespace/shop"}; !slices.Equal(names, want) {
		t.Errorf("inventory over QUIC: %v, want %v", names, want)
	}
	if len(inv.Snapshots) != 1 || inv.Snapshots[0].SnapshotID != "s1" || inv.Snapshots[0].Items != 3 {
		t.Errorf("snapshots %+v", inv.Snapshots)
	}
	fs := decodeJSON[findingsResponse](t, ts.authGet(t, "/api/v1/findings?severity=high"))
	if len(fs.Findings) != 1 || fs.Findings[0].ID != "f-web" || fs.Findings[0].Cluster != "edge" {
		t.Errorf("findings over QUIC: %+v", fs.Findings)
	}
	metrics := ts.authGet(t, "/metrics").body
	wantMetricLines(t, metrics,
		"harrier_backend_inventory_chunks_total 5",
		"harrier_backend_inventory_snapshots_completed_total 1",
		`harrier_backend_inventory_chunks_rejected_total{reason="part_out_of_range"} 1`,
		`harrier_backend_findings{severity="high"} 1`,
	)
}

// writeTestPKI writes, the way `harrier certs` does, a CA (ca.crt), a
// backend certificate for 127.0.0.1 (server.crt, server.key) and one for
// each agent (<id>.crt, <id>.key) into dir, and returns dir.
func writeTestPKI(t *testing.T, dir string, agents ...string) string {
	t.Helper()
	caCert, caKey, err := transport.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := transport.WriteFiles(dir, "ca", caCert, nil); err != nil {
		t.Fatal(err)
	}
	srvCert, srvKey, err := transport.IssueServer(caCert, caKey, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := transport.WriteFiles(dir, "server", srvCert, srvKey); err != nil {
		t.Fatal(err)
	}
	for _, id := range agents {
		cert, key, err := transport.IssueAgent(caCert, caKey, id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := transport.WriteFiles(dir, id, cert, key); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
