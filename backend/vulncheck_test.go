package backend

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend/vulndb"
)

// TestImageVulnerableFindings: running images found in the site's scan
// reports become image-vulnerable findings of their top-level object when
// a snapshot becomes current; a report that goes away takes its findings
// with it at the next snapshot, and first_seen survives between snapshots.
func TestImageVulnerableFindings(t *testing.T) {
	reports := t.TempDir()
	copyReport := func(name string) {
		b, err := os.ReadFile(filepath.Join("vulndb", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(reports, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	copyReport("trivy-nginx.json")
	copyReport("grype-app.json")
	checker := NewImageVulnChecker(reports, vulndb.SeverityHigh, slog.New(slog.DiscardHandler))
	s := openTestStore(t, BadgerConfig{Dir: t.TempDir(), Evaluator: checker})

	web := mkItem("Deployment", "shop", "web", "docker.io/library/nginx:1.25.3")
	pod := mkItem("Pod", "shop", "web-6d4-abcde", "nginx@sha256:4c0fdaa8b6341bfdeca5f18f7837462c80cff90527ee35ef185571e1c327beac")
	pod.Owner = &api.ObjectRef{Kind: "Deployment", Namespace: "shop", Name: "web"}
	api2 := mkItem("StatefulSet", "shop", "api", "registry.site.lan/shop/api:2.3")
	clean := mkItem("Deployment", "shop", "clean", "nginx:1.27")
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	ingestChunks(t, s, "leader-1", chunkRec(1, mkChunk("prod", "s1", 0, 1, t0, []*api.InventoryItem{web, pod, api2, clean}, nil)))

	fs, err := s.Findings(context.Background(), FindingQuery{Check: VulnCheckID})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*api.Finding{}
	for _, f := range fs {
		got[f.GetObject().GetKind()+"/"+f.GetObject().GetName()] = f
	}
	if len(got) != 2 || got["Deployment/web"] == nil || got["StatefulSet/api"] == nil {
		t.Fatalf("findings on %v, want Deployment/web and StatefulSet/api only", keys(got))
	}
	w := got["Deployment/web"]
	if w.GetSeverity() != api.Severity_SEVERITY_CRITICAL || !strings.Contains(w.GetDetail(), "CVE-2023-45853") ||
		!strings.Contains(w.GetDetail(), "1 critical, 1 high, 1 low") || !strings.Contains(w.GetRemediation(), "libc6 2.36-9+deb12u7") ||
		w.GetCluster() != "prod" || w.GetCategory() != "images" {
		t.Errorf("web finding %v", w)
	}
	// Medium is below the threshold; the critical one counts.
	if a := got["StatefulSet/api"]; a.GetSeverity() != api.Severity_SEVERITY_CRITICAL || strings.Contains(a.GetDetail(), "GHSA") {
		t.Errorf("api finding %v", a)
	}

	// Next snapshot: the grype report is gone; web's finding keeps its first_seen.
	if err := os.Remove(filepath.Join(reports, "grype-app.json")); err != nil {
		t.Fatal(err)
	}
	ingestChunks(t, s, "leader-1", chunkRec(2, mkChunk("prod", "s2", 0, 1, t0.Add(time.Hour), []*api.InventoryItem{web, pod, api2, clean}, nil)))
	fs, err = s.Findings(context.Background(), FindingQuery{Check: VulnCheckID})
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 1 || fs[0].GetObject().GetName() != "web" || fs[0].GetId() != w.GetId() {
		t.Fatalf("after the report went away: %v", fs)
	}
	if !fs[0].GetFirstSeen().AsTime().Equal(w.GetFirstSeen().AsTime()) || !fs[0].GetLastSeen().AsTime().After(w.GetLastSeen().AsTime()) {
		t.Errorf("first/last seen %v %v, before %v %v", fs[0].GetFirstSeen(), fs[0].GetLastSeen(), w.GetFirstSeen(), w.GetLastSeen())
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestServiceVulnDBDefault: the backend reads reports from
// <dataDir>/vulndb by default, next to its store, and the store reopens
// with the directory there.
func TestServiceVulnDBDefault(t *testing.T) {
	cfg := Config{DataDir: t.TempDir()}.withDefaults()
	if cfg.VulnDB.Dir != filepath.Join(cfg.DataDir, "vulndb") || cfg.VulnDB.MinSeverity != "high" {
		t.Fatalf("defaults %+v", cfg.VulnDB)
	}
	if err := (Config{VulnDB: VulnDBConfig{MinSeverity: "severe"}}).Validate(); err == nil {
		t.Error("minSeverity severe accepted")
	}
	if err := os.MkdirAll(cfg.VulnDB.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		s, err := OpenBadgerStoreConfig(BadgerConfig{Dir: cfg.DataDir}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
