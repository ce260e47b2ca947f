package backend

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
)

func mkItem(kind, ns, name string, images ...string) *api.InventoryItem {
	return &api.InventoryItem{
		Object: &api.ObjectRef{ApiVersion: "v1", Kind: kind, Namespace: ns, Name: name, Uid: "uid-" + name},
		Images: images,
	}
}

func mkFinding(id, check string, sev api.Severity, kind, ns, name string) *api.Finding {
	return &api.Finding{
		Id: id, CheckId: check, Title: check + " on " + name, Severity: sev, Category: "pod-security",
		Object: &api.ObjectRef{Kind: kind, Namespace: ns, Name: name}, Detail: "securityContext.privileged: true",
		Remediation: "drop privileged",
	}
}

func mkChunk(cluster, snap string, part, parts uint32, at time.Time, items []*api.InventoryItem, findings []*api.Finding) *api.InventoryChunk {
	return &api.InventoryChunk{Cluster: cluster, SnapshotId: snap, Time: timestamppb.New(at), Part: part, Parts: parts,
		Node: "leader-1", Items: items, Findings: findings}
}

func chunkRec(seq uint64, c *api.InventoryChunk) *api.Record {
	return &api.Record{Seq: seq, Class: api.RecordClass_RECORD_CLASS_FINDING, Payload: &api.Record_Inventory{Inventory: c}}
}

func ingestChunks(t *testing.T, s Store, agent string, recs ...*api.Record) []uint64 {
	t.Helper()
	return mustIngest(t, s, agent, &api.Batch{Records: recs})
}

func itemNames(t *testing.T, s Store, q InventoryQuery) []string {
	t.Helper()
	items, err := s.Inventory(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range items {
		out = append(out, e.Cluster+"/"+e.Item.GetObject().GetName())
	}
	return out
}

func findingIDs(t *testing.T, s Store, q FindingQuery) []string {
	t.Helper()
	fs, err := s.Findings(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range fs {
		out = append(out, f.GetId())
	}
	return out
}

func currentSnapshot(t *testing.T, s Store, cluster string) string {
	t.Helper()
	snaps, err := s.Snapshots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, si := range snaps {
		if si.Cluster == cluster {
			return si.SnapshotID
		}
	}
	return ""
}

func TestSnapshotReplacesOnlyWhenComplete(t *testing.T) {
	m := NewMetrics()
	s := openTestStore(t, BadgerConfig{Metrics: m})
	crit := api.Severity_SEVERITY_CRITICAL
	ingestChunks(t, s, "leader", chunkRec(1, mkChunk("edge", "s1", 0, 2, t0,
		[]*api.InventoryItem{mkItem("Deployment", "shop", "web", "nginx:1.27")},
		[]*api.Finding{mkFinding("f-web", "pss-privileged", crit, "Deployment", "shop", "web")})))
	if got := currentSnapshot(t, s, "edge"); got != "" {
		t.Fatalf("after 1 of 2 chunks the current snapshot is %q, want none", got)
	}
	if got := itemNames(t, s, InventoryQuery{}); len(got) != 0 {
		t.Fatalf("items visible before the snapshot is complete: %v", got)
	}
	ingestChunks(t, s, "leader", chunkRec(2, mkChunk("edge", "s1", 1, 2, t0,
		[]*api.InventoryItem{mkItem("Deployment", "shop", "db", "postgres:16")}, nil)))
	if got := currentSnapshot(t, s, "edge"); got != "s1" {
		t.Fatalf("current snapshot %q, want s1", got)
	}
	if got := itemNames(t, s, InventoryQuery{}); !slices.Equal(got, []string{"edge/db", "edge/web"}) {
		t.Fatalf("items %v", got)
	}

	// s2: first chunk only. s1 stays in place.
	ingestChunks(t, s, "leader", chunkRec(3, mkChunk("edge", "s2", 0, 2, t0.Add(time.Hour),
		[]*api.InventoryItem{mkItem("DaemonSet", "kube-system", "proxy", "kube-proxy:1.31")}, nil)))
	if got := itemNames(t, s, InventoryQuery{}); !slices.Equal(got, []string{"edge/db", "edge/web"}) {
		t.Fatalf("incomplete s2 changed the inventory: %v", got)
	}
	if got := findingIDs(t, s, FindingQuery{}); !slices.Equal(got, []string{"f-web"}) {
		t.Fatalf("findings %v", got)
	}
	// s2 completes: everything of s1 goes at once.
	ingestChunks(t, s, "leader", chunkRec(4, mkChunk("edge", "s2", 1, 2, t0.Add(time.Hour), nil, nil)))
	if got := itemNames(t, s, InventoryQuery{}); !slices.Equal(got, []string{"edge/proxy"}) {
		t.Fatalf("items after s2 %v", got)
	}
	if got := findingIDs(t, s, FindingQuery{}); len(got) != 0 {
		t.Fatalf("findings of s1 survived s2: %v", got)
	}
	snaps, _ := s.Snapshots(context.Background())
	want := SnapshotInfo{Cluster: "edge", SnapshotID: "s2", Node: "leader-1", Items: 1, Findings: 0}
	if len(snaps) != 1 || snaps[0].SnapshotID != want.SnapshotID || snaps[0].Items != 1 || snaps[0].Findings != 0 ||
		!snaps[0].Time.Equal(t0.Add(time.Hour)) || snaps[0].Node != want.Node || snaps[0].Kinds["DaemonSet"] != 1 {
		t.Errorf("snapshots %+v", snaps)
	}
	// Old generation and pending chunks are gone from disk.
	for prefix, want := range map[string]int{prefixItem: 1, prefixFinding: 0, prefixPendingChunk: 0, prefixPendingMeta: 0} {
		if n := countKeys(t, s, prefix); n != want {
			t.Errorf("keys under %s: %d, want %d", prefix, n, want)
		}
	}
	out := metricsText(t, m)
	wantMetricLines(t, out,
		"harrier_backend_inventory_chunks_total 4",
		"harrier_backend_inventory_snapshots_completed_total 2",
		`harrier_backend_records_total{class="finding"} 4`,
		`harrier_backend_findings{severity="critical"} 0`,
	)
}

func TestLostChunkKeepsPreviousSnapshot(t *testing.T) {
	m := NewMetrics()
	s := openTestStore(t, BadgerConfig{Metrics: m})
	ingestChunks(t, s, "leader", chunkRec(1, mkChunk("edge", "s1", 0, 1, t0, []*api.InventoryItem{mkItem("Pod", "a", "one")}, nil)))
	// s2 loses its part 1 (spool eviction): s1 stays current for good.
	ingestChunks(t, s, "leader", chunkRec(2, mkChunk("edge", "s2", 0, 2, t0.Add(time.Minute), []*api.InventoryItem{mkItem("Pod", "a", "two")}, nil)))
	if got := currentSnapshot(t, s, "edge"); got != "s1" {
		t.Fatalf("current %q, want s1", got)
	}
	// s3 completes: s1 replaced, the stuck s2 dropped as superseded.
	ingestChunks(t, s, "leader", chunkRec(3, mkChunk("edge", "s3", 0, 1, t0.Add(2*time.Minute), []*api.InventoryItem{mkItem("Pod", "a", "three")}, nil)))
	if got := itemNames(t, s, InventoryQuery{}); !slices.Equal(got, []string{"edge/three"}) {
		t.Fatalf("items %v", got)
	}
	if n := countKeys(t, s, prefixPendingChunk); n != 0 {
		t.Errorf("pending chunks left: %d", n)
	}
	// A late part of s2 is stale now: dropped, acked, s3 stays.
	acked := ingestChunks(t, s, "leader", chunkRec(4, mkChunk("edge", "s2", 1, 2, t0.Add(time.Minute), nil, nil)))
	if !slices.Equal(acked, []uint64{4}) || currentSnapshot(t, s, "edge") != "s3" || countKeys(t, s, prefixPendingChunk) != 0 {
		t.Errorf("late chunk: acked %v, current %q", acked, currentSnapshot(t, s, "edge"))
	}
	// A resend of the current snapshot under a new seq changes nothing.
	ingestChunks(t, s, "leader", chunkRec(5, mkChunk("edge", "s3", 0, 1, t0.Add(2*time.Minute), nil, nil)))
	if got := itemNames(t, s, InventoryQuery{}); !slices.Equal(got, []string{"edge/three"}) {
		t.Fatalf("items after resend of current %v", got)
	}
	out := metricsText(t, m)
	wantMetricLines(t, out,
		`harrier_backend_inventory_pending_dropped_total{reason="superseded"} 1`,
		`harrier_backend_inventory_pending_dropped_total{reason="stale"} 2`,
	)
}

func TestDuplicateChunkIsIdempotent(t *testing.T) {
	m := NewMetrics()
	s := openTestStore(t, BadgerConfig{Metrics: m})
	b := &api.Batch{Records: []*api.Record{
		chunkRec(1, mkChunk("edge", "s1", 0, 3, t0, []*api.InventoryItem{mkItem("Pod", "a", "p0")}, nil)),
		chunkRec(2, mkChunk("edge", "s1", 1, 3, t0, []*api.InventoryItem{mkItem("Pod", "a", "p1")}, nil)),
	}}
	for range 2 {
		if acked := mustIngest(t, s, "leader", b); !slices.Equal(acked, []uint64{1, 2}) {
			t.Fatalf("acked %v", acked)
		}
	}
	// The same part again under a new seq (the agent re-spooled it) is kept once.
	ingestChunks(t, s, "leader", chunkRec(7, mkChunk("edge", "s1", 1, 3, t0, []*api.InventoryItem{mkItem("Pod", "a", "p1")}, nil)))
	if n := countKeys(t, s, prefixPendingChunk); n != 2 {
		t.Fatalf("pending chunks %d, want 2", n)
	}
	if currentSnapshot(t, s, "edge") != "" {
		t.Fatal("2 distinct parts of 3 completed the snapshot")
	}
	ingestChunks(t, s, "leader", chunkRec(3, mkChunk("edge", "s1", 2, 3, t0, []*api.InventoryItem{mkItem("Pod", "a", "p2")}, nil)))
	if got := itemNames(t, s, InventoryQuery{}); !slices.Equal(got, []string{"edge/p0", "edge/p1", "edge/p2"}) {
		t.Fatalf("items %v", got)
	}
	if out := metricsText(t, m); !strings.Contains(out, "harrier_backend_duplicate_records_total 2\n") ||
		!strings.Contains(out, "harrier_backend_inventory_snapshots_completed_total 1\n") {
		t.Errorf("metrics:\n%s", out)
	}
}

func TestFindingFirstSeenKeptAcrossSnapshots(t *testing.T) {
	s := openTestStore(t, BadgerConfig{})
	high, med := api.Severity_SEVERITY_HIGH, api.Severity_SEVERITY_MEDIUM
	ingestChunks(t, s, "leader", chunkRec(1, mkChunk("edge", "s1", 0, 1, t0, nil, []*api.Finding{
		mkFinding("f-kept", "pss-privileged", high, "Deployment", "shop", "web"),
		mkFinding("f-fixed", "pss-hostpath", med, "Deployment", "shop", "db"),
	})))
	t1 := t0.Add(6 * time.Hour)
	ingestChunks(t, s, "leader", chunkRec(2, mkChunk("edge", "s2", 0, 1, t1, nil, []*api.Finding{
		mkFinding("f-kept", "pss-privileged", high, "Deployment", "shop", "web"),
		mkFinding("f-new", "pss-hostnetwork", med, "Deployment", "shop", "api"),
	})))
	kept, err := s.Finding(context.Background(), "f-kept")
	if err != nil {
		t.Fatal(err)
	}
	if !kept.GetFirstSeen().AsTime().Equal(t0) || !kept.GetLastSeen().AsTime().Equal(t1) ||
		kept.GetSnapshotId() != "s2" || kept.GetCluster() != "edge" || kept.GetNode() != "leader-1" {
		t.Errorf("kept finding: first %v last %v snapshot %q cluster %q node %q", kept.GetFirstSeen().AsTime(),
			kept.GetLastSeen().AsTime(), kept.GetSnapshotId(), kept.GetCluster(), kept.GetNode())
	}
	fresh, err := s.Finding(context.Background(), "f-new")
	if err != nil {
		t.Fatal(err)
	}
	if !fresh.GetFirstSeen().AsTime().Equal(t1) {
		t.Errorf("new finding first seen %v, want %v", fresh.GetFirstSeen().AsTime(), t1)
	}
	if _, err := s.Finding(context.Background(), "f-fixed"); !isNotFound(err) {
		t.Errorf("fixed finding: %v, want not found", err)
	}
}

func TestMalformedChunksRejected(t *testing.T) {
	tests := []struct {
		name   string
		chunk  *api.InventoryChunk
		reason string
	}{
		{"parts zero", mkChunk("edge", "s1", 0, 0, t0, nil, nil), rejectPartsZero},
		{"part out of range", mkChunk("edge", "s1", 2, 2, t0, nil, nil), rejectPartOutOfRange},
		{"empty snapshot id", mkChunk("edge", "", 0, 1, t0, nil, nil), rejectEmptySnapshotID},
		{"nul in cluster", mkChunk("ed\x00ge", "s1", 0, 1, t0, nil, nil), rejectBadName},
		{"too many parts", mkChunk("edge", "s1", 0, maxSnapshotParts+1, t0, nil, nil), rejectTooManyParts},
		{"parts changed", mkChunk("edge", "s9", 1, 5, t0, nil, nil), rejectPartsChanged},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var logBuf bytes.Buffer
			m := NewMetrics()
			s, err := OpenBadgerStoreConfig(BadgerConfig{Dir: t.TempDir(), Metrics: m}, slog.New(slog.NewTextHandler(&logBuf, nil)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			// For "parts changed": s9 begins with 3 parts.
			ingestChunks(t, s, "leader", chunkRec(1, mkChunk("edge", "s9", 0, 3, t0, nil, nil)))
			pendingBefore := countKeys(t, s, prefixPendingChunk)
			acked := ingestChunks(t, s, "leader", chunkRec(2, tc.chunk))
			if !slices.Equal(acked, []uint64{2}) {
				t.Errorf("acked %v, want [2]: a malformed chunk is acked so the agent stops resending", acked)
			}
			if n := countKeys(t, s, prefixPendingChunk); n != pendingBefore {
				t.Errorf("pending chunks %d → %d: the malformed chunk was stored", pendingBefore, n)
			}
			wantMetricLines(t, metricsText(t, m), `harrier_backend_inventory_chunks_rejected_total{reason="`+tc.reason+`"} 1`)
			if !strings.Contains(logBuf.String(), "inventory chunk rejected") || !strings.Contains(logBuf.String(), "reason="+tc.reason) {
				t.Errorf("log lacks the rejection:\n%s", logBuf.String())
			}
			// The resend is a plain duplicate, still acked.
			if acked := ingestChunks(t, s, "leader", chunkRec(2, tc.chunk)); !slices.Equal(acked, []uint64{2}) {
				t.Errorf("resend acked %v", acked)
			}
		})
	}
}

func TestInventorySurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, BadgerConfig{Dir: dir})
	ingestChunks(t, s, "leader",
		chunkRec(1, mkChunk("edge", "s1", 0, 1, t0, []*api.InventoryItem{mkItem("Pod", "a", "one")},
			[]*api.Finding{mkFinding("f1", "pss-privileged", api.Severity_SEVERITY_HIGH, "Pod", "a", "one")})),
		chunkRec(2, mkChunk("edge", "s2", 0, 2, t0.Add(time.Hour), []*api.InventoryItem{mkItem("Pod", "a", "two")}, nil)))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	m := NewMetrics()
	s2 := openTestStore(t, BadgerConfig{Dir: dir, Metrics: m})
	if got := itemNames(t, s2, InventoryQuery{}); !slices.Equal(got, []string{"edge/one"}) {
		t.Fatalf("items after reopen %v", got)
	}
	if out := metricsText(t, m); !strings.Contains(out, `harrier_backend_findings{severity="high"} 1`+"\n") {
		t.Errorf("findings gauge not restored at open:\n%s", out)
	}
	// The pending part 0 of s2 survived: part 1 alone completes it.
	ingestChunks(t, s2, "leader", chunkRec(3, mkChunk("edge", "s2", 1, 2, t0.Add(time.Hour), []*api.InventoryItem{mkItem("Pod", "a", "three")}, nil)))
	if got := itemNames(t, s2, InventoryQuery{}); !slices.Equal(got, []string{"edge/three", "edge/two"}) {
		t.Fatalf("items after completing s2 across a restart %v", got)
	}
	if s2.pendingBytes != 0 {
		t.Errorf("pending bytes %d after completion, want 0", s2.pendingBytes)
	}
}

// TestOpenFinishesInterruptedSwitch writes what a crash can leave behind —
// a complete pending snapshot never switched to, and a half-written
// generation — and checks that opening the store repairs both.
func TestOpenFinishesInterruptedSwitch(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, BadgerConfig{Dir: dir})
	ingestChunks(t, s, "leader", chunkRec(1, mkChunk("edge", "s1", 0, 1, t0, []*api.InventoryItem{mkItem("Pod", "a", "one")}, nil)))
	ref := snapRef{cluster: "edge", id: "s2"}
	meta, _ := json.Marshal(pendingMeta{Parts: 1, Time: t0.Add(time.Hour), Arrived: t0})
	chunk, _ := proto.Marshal(mkChunk("edge", "s2", 0, 1, t0.Add(time.Hour), []*api.InventoryItem{mkItem("Pod", "a", "two")}, nil))
	orphan, _ := proto.Marshal(mkItem("Pod", "a", "orphan"))
	err := s.db.Update(func(txn *badger.Txn) error {
		return errorsJoin(txn.Set(pendingMetaKey(ref), meta), txn.Set(pendingChunkKey(ref, 0), chunk),
			txn.Set(itemKey("edge", 99, 0, 0), orphan), txn.Set(itemKey("other", 5, 0, 0), orphan))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openTestStore(t, BadgerConfig{Dir: dir})
	if got := itemNames(t, s2, InventoryQuery{}); !slices.Equal(got, []string{"edge/two"}) {
		t.Fatalf("items %v, want edge/two", got)
	}
	if n := countKeys(t, s2, prefixItem); n != 1 {
		t.Errorf("item keys %d, want 1 (orphans and the old generation deleted)", n)
	}
	if s2.nextGen <= 99 {
		t.Errorf("next generation %d reuses an orphan's", s2.nextGen)
	}
}

func errorsJoin(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

func TestPendingBytesBounded(t *testing.T) {
	m := NewMetrics()
	big := strings.Repeat("x", 3000)
	s := openTestStore(t, BadgerConfig{Metrics: m, MaxPendingInventoryBytes: 8000})
	item := func(name string) []*api.InventoryItem {
		it := mkItem("Pod", "a", name)
		it.Labels = map[string]string{"pad": big}
		return []*api.InventoryItem{it}
	}
	ingestChunks(t, s, "leader",
		chunkRec(1, mkChunk("a", "old", 0, 3, t0, item("a0"), nil)),
		chunkRec(2, mkChunk("a", "old", 1, 3, t0, item("a1"), nil)))
	// Cluster b's chunk does not fit next to a's two: a's snapshot goes whole.
	ingestChunks(t, s, "leader", chunkRec(3, mkChunk("b", "new", 0, 2, t0.Add(time.Minute), item("b0"), nil)))
	if n := countKeys(t, s, prefixPendingChunk); n != 1 {
		t.Fatalf("pending chunks %d, want 1 (b's)", n)
	}
	if n := countKeys(t, s, prefixPendingMeta); n != 1 {
		t.Fatalf("pending snapshots %d, want 1", n)
	}
	if s.pendingBytes <= 0 || s.pendingBytes > 8000 {
		t.Errorf("pending bytes %d", s.pendingBytes)
	}
	// A snapshot that alone exceeds the limit can never complete: dropped.
	ingestChunks(t, s, "leader",
		chunkRec(4, mkChunk("b", "new", 1, 2, t0.Add(time.Minute), item("b1"), nil)))
	if currentSnapshot(t, s, "b") != "new" {
		t.Fatal("b's snapshot within the limit did not complete")
	}
	ingestChunks(t, s, "leader",
		chunkRec(5, mkChunk("c", "huge", 0, 3, t0, item("c0"), nil)),
		chunkRec(6, mkChunk("c", "huge", 1, 3, t0, item("c1"), nil)),
		chunkRec(7, mkChunk("c", "huge", 2, 3, t0, item("c2"), nil)))
	if currentSnapshot(t, s, "c") != "" || countKeys(t, s, prefixPendingChunk) != 0 {
		t.Errorf("oversized snapshot: current %q, pending chunks %d", currentSnapshot(t, s, "c"), countKeys(t, s, prefixPendingChunk))
	}
	if out := metricsText(t, m); !strings.Contains(out, `harrier_backend_inventory_pending_dropped_total{reason="pending_bytes"} 5`+"\n") {
		t.Errorf("metrics:\n%s", out)
	}
}

func TestInventoryAndFindingQueries(t *testing.T) {
	s := openTestStore(t, BadgerConfig{})
	seedInventory(t, s)
	tests := []struct {
		name string
		q    InventoryQuery
		want []string
	}{
		{"all", InventoryQuery{}, []string{"edge/proxy", "edge/web", "edge/shop", "edge/web-7f9-abc", "lab/web"}},
		{"cluster", InventoryQuery{Cluster: "lab"}, []string{"lab/web"}},
		{"kind case-insensitive", InventoryQuery{Kind: "deployment"}, []string{"edge/web", "lab/web"}},
		{"namespace", InventoryQuery{Namespace: "kube-system"}, []string{"edge/proxy"}},
		{"name substring", InventoryQuery{Name: "7f9"}, []string{"edge/web-7f9-abc"}},
		{"node", InventoryQuery{Node: "node-2"}, []string{"edge/web-7f9-abc"}},
		{"image substring", InventoryQuery{Image: "nginx"}, []string{"edge/web", "edge/web-7f9-abc", "lab/web"}},
		{"workloads", InventoryQuery{Workloads: true}, []string{"edge/proxy", "edge/web", "lab/web"}},
		{"limit", InventoryQuery{Limit: 2}, []string{"edge/proxy", "edge/web"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := itemNames(t, s, tc.q); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
	ftests := []struct {
		name string
		q    FindingQuery
		want []string
	}{
		{"all, most severe first", FindingQuery{}, []string{"f-crit", "f-high", "f-high-lab", "f-low"}},
		{"min severity", FindingQuery{Severity: api.Severity_SEVERITY_HIGH}, []string{"f-crit", "f-high", "f-high-lab"}},
		{"cluster", FindingQuery{Cluster: "lab"}, []string{"f-high-lab"}},
		{"check", FindingQuery{Check: "pss-hostpath"}, []string{"f-high"}},
		{"namespace", FindingQuery{Namespace: "kube-system"}, []string{"f-crit"}},
		{"kind", FindingQuery{Kind: "daemonset"}, []string{"f-crit"}},
		{"category", FindingQuery{Category: "rbac"}, []string{"f-low"}},
		{"limit", FindingQuery{Limit: 1}, []string{"f-crit"}},
	}
	for _, tc := range ftests {
		t.Run("findings "+tc.name, func(t *testing.T) {
			if got := findingIDs(t, s, tc.q); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// seedInventory stores a current snapshot for clusters edge and lab.
func seedInventory(t *testing.T, s Store) {
	t.Helper()
	web := mkItem("Deployment", "shop", "web", "nginx:1.27@sha256:abc")
	pod := mkItem("Pod", "shop", "web-7f9-abc", "nginx:1.27@sha256:abc")
	pod.Node = "node-2"
	pod.Owner = &api.ObjectRef{ApiVersion: "apps/v1", Kind: "Deployment", Namespace: "shop", Name: "web"}
	proxy := mkItem("DaemonSet", "kube-system", "proxy", "registry.k8s.io/kube-proxy:v1.31.0")
	ns := mkItem("Namespace", "", "shop")
	crit := mkFinding("f-crit", "pss-privileged", api.Severity_SEVERITY_CRITICAL, "DaemonSet", "kube-system", "proxy")
	high := mkFinding("f-high", "pss-hostpath", api.Severity_SEVERITY_HIGH, "Deployment", "shop", "web")
	low := mkFinding("f-low", "rbac-wildcard", api.Severity_SEVERITY_LOW, "ClusterRole", "", "admin-ish")
	low.Category = "rbac"
	ingestChunks(t, s, "leader-edge",
		chunkRec(1, mkChunk("edge", "e1", 0, 2, t0, []*api.InventoryItem{web, pod}, []*api.Finding{high, low})),
		chunkRec(2, mkChunk("edge", "e1", 1, 2, t0, []*api.InventoryItem{proxy, ns}, []*api.Finding{crit})))
	labWeb := mkItem("Deployment", "shop", "web", "nginx:1.25")
	ingestChunks(t, s, "leader-lab", chunkRec(1, mkChunk("lab", "l1", 0, 1, t0, []*api.InventoryItem{labWeb},
		[]*api.Finding{mkFinding("f-high-lab", "pss-privileged", api.Severity_SEVERITY_HIGH, "Deployment", "shop", "web")})))
}

func FuzzParseGenKey(f *testing.F) {
	f.Add([]byte(itemKey("edge", 7, 1, 2)))
	f.Add([]byte(findingKey("", 1, "f-1")))
	f.Add([]byte("i/"))
	f.Add([]byte("i/x\x00short"))
	f.Fuzz(func(t *testing.T, k []byte) {
		for _, prefix := range []string{prefixItem, prefixFinding} {
			cl, gen, ok := parseGenKey(prefix, k)
			if !ok {
				continue
			}
			// A parsed key starts with the prefix the parts rebuild.
			if !bytes.HasPrefix(k, genPrefix(prefix, cl, gen)) {
				t.Fatalf("%q parsed as (%q, %d), which does not rebuild it", k, cl, gen)
			}
		}
		if ref, ok := parsePendingMetaKey(k); ok && !bytes.Equal(pendingMetaKey(ref), k) && !strings.Contains(ref.id, "\x00") {
			t.Fatalf("%q parsed as %+v, which does not rebuild it", k, ref)
		}
		_, _ = decodeClusterMeta(k)
	})
}

func TestConfigValidatesPendingInventoryBytes(t *testing.T) {
	if err := (Config{MaxPendingInventoryBytes: -1}).Validate(); err == nil || !strings.Contains(err.Error(), "maxPendingInventoryBytes") {
		t.Errorf("negative maxPendingInventoryBytes: %v", err)
	}
	if err := (Config{MaxPendingInventoryBytes: 1 << 20}).Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

// TestPartialSnapshotKeepsUnlistedKinds: a snapshot whose leader could not
// list a kind keeps the previous snapshot's objects and findings of that
// kind (unknown, not deleted); the next complete snapshot decides.
func TestPartialSnapshotKeepsUnlistedKinds(t *testing.T) {
	s := openTestStore(t, BadgerConfig{})
	dep := mkItem("Deployment", "shop", "web", "nginx:1.27")
	pod := mkItem("Pod", "shop", "web-1", "nginx:1.27")
	f := mkFinding("f-dep", "pss-privileged", api.Severity_SEVERITY_HIGH, "Deployment", "shop", "web")
	ingestChunks(t, s, "leader-1", chunkRec(1, mkChunk("edge", "s1", 0, 1, t0, []*api.InventoryItem{dep, pod}, []*api.Finding{f})))

	partial := mkChunk("edge", "s2", 0, 1, t0.Add(time.Hour), []*api.InventoryItem{pod}, nil)
	partial.Errors = map[string]string{"Deployment": "Forbidden"}
	ingestChunks(t, s, "leader-1", chunkRec(2, partial))
	if got := currentSnapshot(t, s, "edge"); got != "s2" {
		t.Fatalf("current snapshot %q", got)
	}
	if got := itemNames(t, s, InventoryQuery{}); !slices.Equal(sorted(got), []string{"edge/web", "edge/web-1"}) {
		t.Fatalf("items after a partial snapshot: %v", got)
	}
	fs, err := s.Findings(context.Background(), FindingQuery{})
	if err != nil || len(fs) != 1 || fs[0].GetId() != "f-dep" || !fs[0].GetLastSeen().AsTime().Equal(t0) {
		t.Fatalf("findings after a partial snapshot: %v %v (want f-dep, last seen %v)", fs, err, t0)
	}

	ingestChunks(t, s, "leader-1", chunkRec(3, mkChunk("edge", "s3", 0, 1, t0.Add(2*time.Hour), []*api.InventoryItem{pod}, nil)))
	if got := itemNames(t, s, InventoryQuery{}); !slices.Equal(got, []string{"edge/web-1"}) {
		t.Fatalf("items after a complete snapshot: %v", got)
	}
	if got := findingIDs(t, s, FindingQuery{}); len(got) != 0 {
		t.Fatalf("findings after a complete snapshot: %v", got)
	}
}

func sorted(s []string) []string { slices.Sort(s); return s }
