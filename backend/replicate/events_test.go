package replicate_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/backend"
	"github.com/harrier-sec/harrier/backend/replicate"
	"github.com/harrier-sec/harrier/internal/confval"
	"github.com/harrier-sec/harrier/internal/natstest"
	"github.com/harrier-sec/harrier/internal/testenv"
)

func eventRecord(agent string, seq uint64) *api.Record {
	return &api.Record{Seq: seq, Class: api.RecordClass_RECORD_CLASS_EVENT, Payload: &api.Record_Event{Event: &api.Event{
		Node: agent, Kind: api.EventKind_EVENT_KIND_EXEC, Time: timestamppb.New(time.Unix(1_700_000_000+int64(seq), 0)),
		Process: &api.Process{Exe: "/bin/sh", Args: []string{"sh", "-c", fmt.Sprintf("event-%d %s", seq, strings.Repeat("x", 160))}}}}}
}

// eventMarks are the events' markers (event-<seq>), oldest first.
func eventMarks(t *testing.T, st *backend.BadgerStore, node string) []string {
	t.Helper()
	evs, err := st.Events(context.Background(), backend.EventQuery{Node: node, Limit: backend.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		out = append(out, strings.Fields(e.GetProcess().GetArgs()[2])[0])
	}
	slices.SortFunc(out, func(a, b string) int {
		var x, y int
		fmt.Sscanf(a, "event-%d", &x)
		fmt.Sscanf(b, "event-%d", &y)
		return x - y
	})
	return out
}

// TestRawEventsStream: raw events go to a stream of their own, bounded
// by cfg.EventsMaxBytes (then EventsMaxAge), and are materialized into
// each replica's event store; alerts stay in the main stream, untouched
// by the events' limits. A replica started from empty after the oldest
// events were removed applies what is left, counts what it missed, and
// serves the same newest events as the replica that saw them all.
func TestRawEventsStream(t *testing.T) {
	nodes := natstest.Cluster(t)
	const maxBytes = 256 << 10
	cfg := replicate.Config{Servers: natstest.URLs(nodes), Replicas: 3, EventsMaxBytes: maxBytes}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	nc, err := replicate.Connect(cfg, "harrier-test-setup")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	waitStreams(ctx, t, js, cfg)
	a := startReplica(t, cfg, t.TempDir(), "a")
	defer func() { a.cancel() }()

	const alerts, events = 100, 3000
	var recs []*api.Record
	for s := uint64(1); s <= alerts; s++ {
		recs = append(recs, alertRecord("node-0", s))
	}
	for s := uint64(alerts + 1); s <= alerts+events; s++ {
		recs = append(recs, eventRecord("node-0", s))
	}
	for chunk := range slices.Chunk(recs, 100) {
		upload(ctx, t, func() *replicate.Publisher { return a.pub }, "node-0", "spool-0", chunk)
	}

	d := cfg.WithDefaults()
	evStream, err := js.Stream(ctx, d.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	evState := evStream.CachedInfo().State
	if evState.LastSeq != events || evState.Bytes > maxBytes || evState.FirstSeq <= 1 {
		t.Errorf("events stream: last %d (want %d), %d bytes (limit %d), first %d (want > 1: the oldest removed)",
			evState.LastSeq, events, evState.Bytes, maxBytes, evState.FirstSeq)
	}
	mainStream, err := js.Stream(ctx, d.Stream)
	if err != nil {
		t.Fatal(err)
	}
	mainInfo, err := mainStream.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	if subj := mainInfo.State.Subjects; subj[replicate.Subject] < alerts || subj[replicate.EventsSubject] != 0 {
		t.Errorf("main stream's subjects %v: want the %d alerts and no raw events", subj, alerts)
	}

	c := startReplica(t, cfg, t.TempDir(), "c") // from empty, after the removal
	defer func() { c.cancel() }()
	for _, r := range []*replica{a, c} {
		testenv.WaitFor(t, time.Minute, "the replica applies both streams", func() bool {
			return r.mat.Applied() >= mainInfo.State.LastSeq && r.events.Applied() >= evState.LastSeq && r.mat.Ready() == nil && r.events.Ready() == nil
		})
	}
	if got, want := c.events.Removed(), evState.FirstSeq-1; got != want {
		t.Errorf("replica c counts %d events removed before it applied them, want %d", got, want)
	}
	for name, r := range map[string]*replica{"a": a, "c (from empty)": c} {
		got, err := r.store.Alerts(ctx, backend.AlertQuery{Node: "node-0", Limit: backend.MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != alerts {
			t.Errorf("replica %s: %d alerts, want %d", name, len(got), alerts)
		}
	}
	marksA, marksC := eventMarks(t, a.store, "node-0"), eventMarks(t, c.store, "node-0")
	kept := int(evState.LastSeq - evState.FirstSeq + 1)
	if len(marksC) != min(kept, backend.MaxLimit) || len(marksA) < len(marksC) || !slices.Equal(marksA[len(marksA)-len(marksC):], marksC) {
		t.Errorf("newest events: c has %d (the stream kept %d), a has %d; c's must be a's newest", len(marksC), kept, len(marksA))
	}
	if len(marksC) > 0 && marksC[len(marksC)-1] != fmt.Sprintf("event-%d", alerts+events) {
		t.Errorf("c's newest event is %s, want event-%d", marksC[len(marksC)-1], alerts+events)
	}

	// The age limit: raw events go, alerts stay.
	cfg.EventsMaxAge = confval.Duration(time.Second)
	if err := replicate.EnsureStream(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "the events stream's age limit removes every event", func() bool {
		info, err := evStream.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
	info, err := mainStream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != mainInfo.State.Msgs {
		t.Errorf("main stream: %d messages after the events' age limit, had %d", info.State.Msgs, mainInfo.State.Msgs)
	}
}
