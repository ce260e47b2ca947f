package agent

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
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
	tests := []struct {
		name string
		yaml string
		want string // substring of the error; empty for success
	}{
		{"empty", "", ""},
		{"all sections", "dataDir: /x\nspool:\n  quotaBytes: 1000000\n  eventKinds: [exec]\nuplink:\n  addr: b:9471\n", ""},
		{"unknown field", "uplink:\n  adress: b:9471\n", "adress"},
		{"bad event kind", "spool:\n  eventKinds: [exec, teleport]\n", "teleport"},
		// The backend's section belongs to `harrier run` and `harrier backend`.
		{"backend section", "backend:\n  apiAddr: 127.0.0.1:1\n", "backend"},
		{"wrong type", "spool:\n  quotaBytes: lots\n", "quotaBytes"},
		{"leader election", "kube:\n  leaderElection:\n    namespace: sec\n    leaseDuration: 30s\n    renewDeadline: 20s\n    retryPeriod: 4s\n", ""},
		{"leader election off", "kube:\n  leaderElection:\n    enabled: false\n", ""},
		{"renew past lease", "kube:\n  leaderElection:\n    renewDeadline: 20s\n", "renewDeadline 20s: must be shorter than leaseDuration 15s"},
		{"leader election unknown field", "kube:\n  leaderElection:\n    leaseSeconds: 15\n", "leaseSeconds"},
		{"leader election bad duration", "kube:\n  leaderElection:\n    retryPeriod: 2\n", "duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "h.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfig(path)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("LoadConfig: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path)):
				t.Errorf("LoadConfig = %v, want an error naming %s and %q", err, path, tt.want)
			}
		})
	}
	cfg := WithDefaults(Config{DataDir: "/d"})
	if cfg.Uplink.CAFile != "/d/pki/ca.crt" || len(cfg.Spool.EventKinds) == 0 {
		t.Errorf("defaults = %+v", cfg)
	}
}
