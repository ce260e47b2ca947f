package agent

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/confval/confvaltest"
	"github.com/harrier-sec/harrier/store"
)

func TestWireSeqRoundTrip(t *testing.T) {
	for _, id := range []store.RecordID{
		{Class: store.ClassAlert, Seq: 1},
		{Class: store.ClassFinding, Seq: 42},
		{Class: store.ClassEvent, Seq: 1<<classShift - 1},
	} {
		if got := recordID(wireSeq(id)); got != id {
			t.Errorf("recordID(wireSeq(%v)) = %v", id, got)
		}
	}
	// The same per-class number in two classes must differ on the wire, or
	// the backend would drop one as a duplicate.
	if wireSeq(store.RecordID{Class: store.ClassAlert, Seq: 5}) == wireSeq(store.RecordID{Class: store.ClassEvent, Seq: 5}) {
		t.Error("alert 5 and event 5 share a wire sequence number")
	}
}

// TestSpoolSource runs the adapter over a real spool: alerts come first,
// each record keeps its payload, and acked records are released.
func TestSpoolSource(t *testing.T) {
	sp, err := store.Open(store.Config{Dir: t.TempDir(), MinFreeBytes: -1}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	enc := func(r *api.Record) []byte {
		b, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	event := enc(&api.Record{Class: api.RecordClass_RECORD_CLASS_EVENT, Payload: &api.Record_Event{Event: &api.Event{Node: "n1"}}})
	alert := enc(&api.Record{Class: api.RecordClass_RECORD_CLASS_ALERT, Payload: &api.Record_Alert{Alert: &api.Alert{Id: "a1"}}})
	if _, err := sp.AppendBatch(store.ClassEvent, [][]byte{event, event}); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Append(store.ClassAlert, alert); err != nil {
		t.Fatal(err)
	}
	src := NewSpoolSource(sp)
	recs, err := src.Pending(context.Background(), 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 || recs[0].GetAlert().GetId() != "a1" || recordID(recs[0].GetSeq()).Class != store.ClassAlert {
		t.Fatalf("first pending record = %v, want the alert", recs)
	}
	var seqs []uint64
	for _, r := range recs {
		seqs = append(seqs, r.GetSeq())
	}
	if err := src.Acked(seqs); err != nil {
		t.Fatal(err)
	}
	rest, err := src.Pending(context.Background(), 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs)+len(rest) != 3 {
		t.Errorf("%d then %d records pending, want 3 in all", len(recs), len(rest))
	}
	for _, r := range rest {
		if r.GetEvent().GetNode() != "n1" {
			t.Errorf("event payload lost: %v", r)
		}
	}
}

func TestLoadConfig(t *testing.T) {
	confvaltest.CheckLoad(t, func(path string) error { _, err := LoadConfig(path); return err }, []confvaltest.Case{
		{Name: "empty", YAML: ""},
		{Name: "all sections", YAML: "dataDir: /x\nspool:\n  quotaBytes: 1000000\n  eventKinds: [exec]\nuplink:\n  addr: b:9471\n"},
		{Name: "unknown field", YAML: "uplink:\n  adress: b:9471\n", Want: "adress"},
		{Name: "fallback backends", YAML: "uplink:\n  addr: b1:9471\n  fallbackAddrs: [b2:9471, backends.example:9471]\n"},
		{Name: "fallback without port", YAML: "uplink:\n  fallbackAddrs: [b2]\n", Want: "uplink.fallbackAddrs \"b2\""},
		{Name: "bad event kind", YAML: "spool:\n  eventKinds: [exec, teleport]\n", Want: "teleport"},
		// The backend's section belongs to `harrier run` and `harrier backend`.
		{Name: "backend section", YAML: "backend:\n  apiAddr: 127.0.0.1:1\n", Want: "backend"},
		{Name: "wrong type", YAML: "spool:\n  quotaBytes: lots\n", Want: "quotaBytes"},
		{Name: "leader election", YAML: "kube:\n  leaderElection:\n    namespace: sec\n    leaseDuration: 30s\n    renewDeadline: 20s\n    retryPeriod: 4s\n"},
		{Name: "leader election off", YAML: "kube:\n  leaderElection:\n    enabled: false\n"},
		{Name: "renew past lease", YAML: "kube:\n  leaderElection:\n    renewDeadline: 20s\n", Want: "renewDeadline 20s: must be shorter than leaseDuration 15s"},
		{Name: "leader election unknown field", YAML: "kube:\n  leaderElection:\n    leaseSeconds: 15\n", Want: "leaseSeconds"},
		{Name: "leader election bad duration", YAML: "kube:\n  leaderElection:\n    retryPeriod: 2\n", Want: "duration"},
	})
	cfg := WithDefaults(Config{DataDir: "/d"})
	if cfg.Uplink.CAFile != "/d/pki/ca.crt" || len(cfg.Spool.EventKinds) == 0 {
		t.Errorf("defaults = %+v", cfg)
	}
}
