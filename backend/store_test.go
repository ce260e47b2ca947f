package backend

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/badgerkv"
)

var t0 = time.Date(2026, 11, 22, 16, 0, 0, 0, time.UTC)

func openTestStore(t testing.TB, cfg BadgerConfig) *BadgerStore {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	s, err := OpenBadgerStoreConfig(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

type alertOpt func(*api.Alert)

func mkAlert(id string, opts ...alertOpt) *api.Alert {
	a := &api.Alert{
		Id: id, DetectionId: "sensitive-files", Name: "Read of shadow file", Severity: api.Severity_SEVERITY_HIGH,
		Node: "node-1", Cluster: "edge", Count: 1,
		FirstSeen: timestamppb.New(t0), LastSeen: timestamppb.New(t0),
		Container: &api.Container{Runtime: "containerd", Id: "3f2a9c0d1e2f3a4b5c6d", PodName: "web-1", PodNamespace: "shop"},
		Process:   &api.Process{Tgid: 42, Exe: "/usr/bin/cat", Args: []string{"cat", "/etc/shadow"}},
	}
	for _, o := range opts {
		o(a)
	}
	return a
}

func mkEvent(node string, kind api.EventKind, at time.Time) *api.Event {
	return &api.Event{Node: node, Kind: kind, Time: timestamppb.New(at), Process: &api.Process{Exe: "/bin/sh"}}
}

func alertRec(seq uint64, a *api.Alert) *api.Record {
	return &api.Record{Seq: seq, Class: api.RecordClass_RECORD_CLASS_ALERT, Payload: &api.Record_Alert{Alert: a}}
}

func eventRec(seq uint64, e *api.Event) *api.Record {
	return &api.Record{Seq: seq, Class: api.RecordClass_RECORD_CLASS_EVENT, Payload: &api.Record_Event{Event: e}}
}

func mustIngest(t *testing.T, s Store, agent string, b *api.Batch) []uint64 {
	t.Helper()
	acked, err := s.Ingest(context.Background(), agent, b)
	if err != nil {
		t.Fatalf("ingest: %v", err)
	}
	return acked
}

func TestIngestDeduplicates(t *testing.T) {
	m := NewMetrics()
	s := openTestStore(t, BadgerConfig{Metrics: m})
	b := &api.Batch{AgentId: "agent-a", Records: []*api.Record{
		alertRec(1, mkAlert("al-1")),
		eventRec(2, mkEvent("node-1", api.EventKind_EVENT_KIND_EXEC, t0)),
		eventRec(3, mkEvent("node-1", api.EventKind_EVENT_KIND_CONNECT, t0)),
	}}
	for i := range 2 {
		acked := mustIngest(t, s, "agent-a", b)
		if !slices.Equal(acked, []uint64{1, 2, 3}) {
			t.Fatalf("round %d: acked %v, want [1 2 3]", i, acked)
		}
	}
	// The same seq from another agent is a different record.
	mustIngest(t, s, "agent-b", &api.Batch{Records: []*api.Record{eventRec(2, mkEvent("node-2", api.EventKind_EVENT_KIND_EXEC, t0))}})

	events, err := s.Events(context.Background(), EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 3 {
		t.Errorf("events stored: %d, want 3 (2 from agent-a once, 1 from agent-b)", len(events))
	}
	agents, err := s.Agents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(agents) != 2 || agents[0].ID != "agent-a" || agents[0].Records != 3 || agents[1].Records != 1 {
		t.Errorf("agents: %+v", agents)
	}
	out := metricsText(t, m)
	wantMetricLines(t, out,
		"harrier_backend_duplicate_records_total 3",
		"harrier_backend_batches_total 3",
		`harrier_backend_records_total{class="event"} 5`,
		`harrier_backend_records_total{class="alert"} 2`,
		"harrier_backend_alerts_stored_total 1",
		"harrier_backend_events_stored_total 3",
		"harrier_backend_ingest_duration_seconds_count 3",
	)
}

func TestAlertUpdate(t *testing.T) {
	tests := []struct {
		name                string
		first, second       *api.Alert
		wantCount           uint64
		wantFirst, wantLast time.Time
		wantEvidence        int
	}{
		{
			name:  "newer repeat replaces",
			first: mkAlert("x"),
			second: mkAlert("x", func(a *api.Alert) {
				a.Count, a.LastSeen, a.Description = 5, timestamppb.New(t0.Add(time.Hour)), "updated"
			}),
			wantCount: 5, wantFirst: t0, wantLast: t0.Add(time.Hour),
		},
		{
			name: "older repeat after an outage keeps max count and latest last_seen",
			first: mkAlert("x", func(a *api.Alert) {
				a.Count, a.LastSeen = 9, timestamppb.New(t0.Add(2*time.Hour))
				a.Evidence = []*api.Event{mkEvent("node-1", api.EventKind_EVENT_KIND_FILE_OPEN, t0)}
			}),
			second: mkAlert("x", func(a *api.Alert) {
				a.Count, a.FirstSeen, a.LastSeen = 3, timestamppb.New(t0.Add(-time.Hour)), timestamppb.New(t0.Add(time.Hour))
			}),
			wantCount: 9, wantFirst: t0.Add(-time.Hour), wantLast: t0.Add(2 * time.Hour), wantEvidence: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMetrics()
			s := openTestStore(t, BadgerConfig{Metrics: m})
			mustIngest(t, s, "a", &api.Batch{Records: []*api.Record{alertRec(1, tc.first)}})
			mustIngest(t, s, "a", &api.Batch{Records: []*api.Record{alertRec(2, tc.second)}})
			all, err := s.Alerts(context.Background(), AlertQuery{})
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != 1 {
				t.Fatalf("%d alerts, want 1", len(all))
			}
			a := all[0]
			if a.GetCount() != tc.wantCount || !a.GetFirstSeen().AsTime().Equal(tc.wantFirst) ||
				!a.GetLastSeen().AsTime().Equal(tc.wantLast) || len(a.GetEvidence()) != tc.wantEvidence {
				t.Errorf("got count=%d first=%v last=%v evidence=%d", a.GetCount(), a.GetFirstSeen().AsTime(),
					a.GetLastSeen().AsTime(), len(a.GetEvidence()))
			}
			if !strings.Contains(metricsText(t, m), "harrier_backend_alerts_updated_total 1\n") {
				t.Error("update not counted")
			}
		})
	}
}

func TestAlertWithoutIDGetsOne(t *testing.T) {
	s := openTestStore(t, BadgerConfig{})
	mustIngest(t, s, "agent-a", &api.Batch{Records: []*api.Record{alertRec(7, mkAlert(""))}})
	if _, err := s.Alert(context.Background(), "agent-a-7"); err != nil {
		t.Fatal(err)
	}
}

func countKeys(t *testing.T, s *BadgerStore, prefix string) int {
	t.Helper()
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		for range badgerkv.Prefix(txn, []byte(prefix)) {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestLargeBatchSpansTransactions(t *testing.T) {
	s := openTestStore(t, BadgerConfig{MaxEvents: 500})
	big := strings.Repeat("A", 4096)
	var recs []*api.Record
	for i := range 1500 { // ~6 MB: more than one Badger transaction holds here
		e := mkEvent("node-1", api.EventKind_EVENT_KIND_EXEC, t0)
		e.Process.Args = []string{big}
		recs = append(recs, eventRec(uint64(i+1), e))
	}
	acked := mustIngest(t, s, "a", &api.Batch{Records: recs})
	if len(acked) != 1500 {
		t.Fatalf("acked %d, want 1500", len(acked))
	}
	// 4 KiB events: 256 to a page; pages are dropped whole.
	if got := storedEvents(t, s); got < 500 || got >= 500+256 {
		t.Errorf("%d events stored, want 500 to 755", got)
	}
	if got := countKeys(t, s, prefixEvent); got != 3 {
		t.Errorf("%d event pages, want 3", got)
	}
	evs, err := s.Events(context.Background(), EventQuery{Limit: MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 500 {
		t.Errorf("Events lists %d, want the newest MaxEvents (500)", len(evs))
	}
	if got := countKeys(t, s, prefixSeen); got != 1500 {
		t.Errorf("%d dedup markers, want 1500", got)
	}
}

func TestAgentInfoAndGaps(t *testing.T) {
	now := t0
	s := openTestStore(t, BadgerConfig{Now: func() time.Time { return now }})
	gaps := []*api.Gap{
		{Class: api.RecordClass_RECORD_CLASS_EVENT, FirstSeq: 10, LastSeq: 19, Count: 10},
		{Class: api.RecordClass_RECORD_CLASS_EVENT, FirstSeq: 30, LastSeq: 34, Count: 5},
		{Class: api.RecordClass_RECORD_CLASS_ALERT, FirstSeq: 40, LastSeq: 40, Count: 1},
	}
	mustIngest(t, s, "a", &api.Batch{Gaps: gaps, Records: []*api.Record{eventRec(1, mkEvent("n", api.EventKind_EVENT_KIND_EXEC, t0))}})
	now = t0.Add(time.Minute)
	health := &api.AgentHealth{Version: "0.1.0", Kernel: "6.1.0", Node: "node-1", Drops: map[string]uint64{"sensor_queue": 4}}
	// A heartbeat that also resends the first gap: it must not count twice.
	mustIngest(t, s, "a", &api.Batch{Health: health, Gaps: gaps[:1]})

	agents, err := s.Agents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(agents) != 1 {
		t.Fatalf("%d agents", len(agents))
	}
	a := agents[0]
	wantGaps := map[api.RecordClass]uint64{api.RecordClass_RECORD_CLASS_EVENT: 15, api.RecordClass_RECORD_CLASS_ALERT: 1}
	if a.ID != "a" || !a.FirstSeen.Equal(t0) || !a.LastSeen.Equal(t0.Add(time.Minute)) || a.Records != 1 ||
		fmt.Sprint(a.Gaps) != fmt.Sprint(wantGaps) || !proto.Equal(a.Health, health) {
		t.Errorf("agent = %+v", a)
	}
}

func TestDurableAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBadgerStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &api.Batch{Records: []*api.Record{alertRec(1, mkAlert("al-1")), eventRec(2, mkEvent("n", api.EventKind_EVENT_KIND_EXEC, t0))},
		Health: &api.AgentHealth{Version: "v1"}}
	mustIngest(t, s, "a", b)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	m := NewMetrics()
	s2 := openTestStore(t, BadgerConfig{Dir: dir, Metrics: m})
	if _, err := s2.Alert(context.Background(), "al-1"); err != nil {
		t.Errorf("alert after reopen: %v", err)
	}
	if evs, _ := s2.Events(context.Background(), EventQuery{}); len(evs) != 1 {
		t.Errorf("%d events after reopen, want 1", len(evs))
	}
	if ag, _ := s2.Agents(context.Background()); len(ag) != 1 || ag[0].Health.GetVersion() != "v1" {
		t.Errorf("agents after reopen: %+v", ag)
	}
	mustIngest(t, s2, "a", b)
	if !strings.Contains(metricsText(t, m), "harrier_backend_duplicate_records_total 2\n") {
		t.Error("resend after reopen was not recognised as duplicate")
	}
}

func TestIngestRefuses(t *testing.T) {
	s := openTestStore(t, BadgerConfig{})
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name  string
		ctx   context.Context
		agent string
		b     *api.Batch
	}{
		{"empty agent", context.Background(), "", &api.Batch{}},
		{"nil batch", context.Background(), "a", nil},
		{"agent mismatch", context.Background(), "a", &api.Batch{AgentId: "b"}},
		{"cancelled", cancelled, "a", &api.Batch{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Ingest(tc.ctx, tc.agent, tc.b); err == nil {
				t.Error("no error")
			}
		})
	}
}

func seedAlerts(t *testing.T, s Store) {
	t.Helper()
	recs := []*api.Record{
		alertRec(1, mkAlert("crit-shop", func(a *api.Alert) {
			a.Severity, a.DetectionId, a.LastSeen = api.Severity_SEVERITY_CRITICAL, "HAR-EXEC-002", timestamppb.New(t0.Add(3*time.Hour))
		})),
		alertRec(2, mkAlert("high-shop")),
		alertRec(3, mkAlert("low-other", func(a *api.Alert) {
			a.Severity, a.Node, a.Cluster, a.LastSeen = api.Severity_SEVERITY_LOW, "node-2", "lab", timestamppb.New(t0.Add(time.Hour))
			a.Container.PodNamespace = "kube-system"
		})),
		alertRec(4, mkAlert("host-medium", func(a *api.Alert) {
			a.Severity, a.Container, a.LastSeen = api.Severity_SEVERITY_MEDIUM, nil, timestamppb.New(t0.Add(2*time.Hour))
		})),
	}
	mustIngest(t, s, "agent-a", &api.Batch{Records: recs})
}

func TestAlertQueries(t *testing.T) {
	s := openTestStore(t, BadgerConfig{})
	seedAlerts(t, s)
	tests := []struct {
		name string
		q    AlertQuery
		want []string
	}{
		{"all, newest first", AlertQuery{}, []string{"crit-shop", "host-medium", "low-other", "high-shop"}},
		{"min severity high", AlertQuery{Severity: api.Severity_SEVERITY_HIGH}, []string{"crit-shop", "high-shop"}},
		{"detection", AlertQuery{Detection: "HAR-EXEC-002"}, []string{"crit-shop"}},
		{"cluster", AlertQuery{Cluster: "lab"}, []string{"low-other"}},
		{"node", AlertQuery{Node: "node-1"}, []string{"crit-shop", "host-medium", "high-shop"}},
		{"namespace", AlertQuery{Namespace: "shop"}, []string{"crit-shop", "high-shop"}},
		{"since", AlertQuery{Since: t0.Add(90 * time.Minute)}, []string{"crit-shop", "host-medium"}},
		{"limit", AlertQuery{Limit: 1}, []string{"crit-shop"}},
		{"nothing", AlertQuery{Node: "nope"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Alerts(context.Background(), tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if ids := alertIDs(got); !slices.Equal(ids, tc.want) {
				t.Errorf("got %v, want %v", ids, tc.want)
			}
		})
	}
	if _, err := s.Alert(context.Background(), "missing"); !isNotFound(err) {
		t.Errorf("unknown alert: %v, want ErrNotFound", err)
	}
}

func TestSinkCallsIngest(t *testing.T) {
	s := openTestStore(t, BadgerConfig{})
	// The transport's interface, declared here as the transport declares it.
	var sink interface {
		Store(ctx context.Context, agentID string, b *api.Batch) (acked []uint64, err error)
	} = NewSink(s)
	acked, err := sink.Store(context.Background(), "a", &api.Batch{Records: []*api.Record{alertRec(5, mkAlert("z"))}})
	if err != nil || !slices.Equal(acked, []uint64{5}) {
		t.Fatalf("acked %v, err %v", acked, err)
	}
}

func alertIDs(as []*api.Alert) []string {
	var ids []string
	for _, a := range as {
		ids = append(ids, a.GetId())
	}
	return ids
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// wantMetricLines fails t for each of lines that is not a whole line of
// the metrics exposition text.
func wantMetricLines(t *testing.T, text string, lines ...string) {
	t.Helper()
	have := strings.Split(text, "\n")
	for _, l := range lines {
		if !slices.Contains(have, l) {
			t.Errorf("metrics lack %q", l)
		}
	}
}

func metricsText(t *testing.T, m *Metrics) string {
	t.Helper()
	var b strings.Builder
	if _, err := m.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestDuplicateWithinBatch: an event's marker waits with its page until the
// page is written, so a repeat inside the same batch must still be caught.
func TestDuplicateWithinBatch(t *testing.T) {
	m := NewMetrics()
	s := openTestStore(t, BadgerConfig{Metrics: m})
	e := mkEvent("node-1", api.EventKind_EVENT_KIND_EXEC, t0)
	acked := mustIngest(t, s, "a", &api.Batch{Records: []*api.Record{eventRec(7, e), eventRec(7, e), eventRec(8, e)}})
	if !slices.Equal(acked, []uint64{7, 7, 8}) {
		t.Errorf("acked %v, want [7 7 8]", acked)
	}
	if got := storedEvents(t, s); got != 2 {
		t.Errorf("%d events stored, want 2", got)
	}
	if got := countKeys(t, s, prefixSeen); got != 2 {
		t.Errorf("%d markers, want 2", got)
	}
}

// TestFreshSpoolIsNotDeduplicatedAway: an agent whose spool was made afresh
// numbers its records from 1 again under a new spool ID; those records are
// new, not repeats. Within one spool ID (and for the empty ID of spools from
// before IDs) a repeat is still a repeat.
func TestFreshSpoolIsNotDeduplicatedAway(t *testing.T) {
	s := openTestStore(t, BadgerConfig{})
	e := mkEvent("node-1", api.EventKind_EVENT_KIND_EXEC, t0)
	const first, second = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
	for _, tc := range []struct {
		spoolID string
		stored  int // events stored after this batch
	}{
		{"", 2},     // a spool from before IDs
		{"", 2},     // its repeat
		{first, 4},  // the same numbers from a new spool
		{first, 4},  // its repeat
		{second, 6}, // wiped again
		{"", 6},     // the old spool's numbers are still known
		{second, 6}, // and so are the second spool's
	} {
		b := &api.Batch{SpoolId: tc.spoolID, Records: []*api.Record{eventRec(1, e), eventRec(2, e)}}
		if acked := mustIngest(t, s, "a", b); !slices.Equal(acked, []uint64{1, 2}) {
			t.Fatalf("spool %q: acked %v, want [1 2]", tc.spoolID, acked)
		}
		if got := storedEvents(t, s); got != tc.stored {
			t.Fatalf("spool %q: %d events stored, want %d", tc.spoolID, got, tc.stored)
		}
	}
}
