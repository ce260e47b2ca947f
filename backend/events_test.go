package backend

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/harrier-sec/harrier/api"
	"github.com/harrier-sec/harrier/internal/badgerkv"
)

func TestEventRingBound(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, BadgerConfig{Dir: dir, MaxEvents: 5})
	seq := uint64(0)
	for _, n := range []int{3, 4, 1, 4} { // 12 events in uneven batches
		var recs []*api.Record
		for range n {
			seq++
			recs = append(recs, eventRec(seq, mkEvent("node-1", api.EventKind_EVENT_KIND_EXEC, t0.Add(time.Duration(seq)*time.Second))))
		}
		mustIngest(t, s, "a", &api.Batch{Records: recs})
	}
	check := func(s *BadgerStore, wantNewest int64) {
		t.Helper()
		evs, err := s.Events(context.Background(), EventQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 5 {
			t.Fatalf("%d events, want 5", len(evs))
		}
		if got := evs[0].GetTime().AsTime().Sub(t0); got != time.Duration(wantNewest)*time.Second {
			t.Errorf("newest event at +%v, want +%ds", got, wantNewest)
		}
		// Whole pages (one per batch) are dropped: what is stored is the
		// newest MaxEvents plus less than the oldest page kept.
		if got := storedEvents(t, s); got < 5 || got >= 5+4 {
			t.Errorf("%d events stored, want 5 to 8", got)
		}
	}
	check(s, 12)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openTestStore(t, BadgerConfig{Dir: dir, MaxEvents: 5})
	check(s2, 12)
	mustIngest(t, s2, "a", &api.Batch{Records: []*api.Record{eventRec(13, mkEvent("node-1", api.EventKind_EVENT_KIND_EXEC, t0.Add(13*time.Second)))}})
	check(s2, 13)
}

// storedEvents counts the events in the stored pages.
func storedEvents(t *testing.T, s *BadgerStore) int {
	t.Helper()
	n := 0
	err := s.db.View(func(txn *badger.Txn) error {
		pages := &pageReader{dir: filepath.Join(s.cfg.Dir, eventsDirName)}
		defer pages.close()
		for item := range badgerkv.Prefix(txn, []byte(prefixEvent)) {
			if err := item.Value(func(v []byte) error {
				v, err := pages.page(v)
				if err != nil {
					return err
				}
				return eachPageEvent(v, func([]byte) error { n++; return nil })
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEventQueries(t *testing.T) {
	s := openTestStore(t, BadgerConfig{})
	mustIngest(t, s, "a", &api.Batch{Records: []*api.Record{
		eventRec(1, mkEvent("node-1", api.EventKind_EVENT_KIND_EXEC, t0)),
		eventRec(2, mkEvent("node-2", api.EventKind_EVENT_KIND_CONNECT, t0.Add(time.Minute))),
		eventRec(3, mkEvent("node-1", api.EventKind_EVENT_KIND_CONNECT, t0.Add(2*time.Minute))),
	}})
	tests := []struct {
		name string
		q    EventQuery
		want []string // node/kind, newest first
	}{
		{"all", EventQuery{}, []string{"node-1/EVENT_KIND_CONNECT", "node-2/EVENT_KIND_CONNECT", "node-1/EVENT_KIND_EXEC"}},
		{"node", EventQuery{Node: "node-2"}, []string{"node-2/EVENT_KIND_CONNECT"}},
		{"kind", EventQuery{Kind: api.EventKind_EVENT_KIND_EXEC}, []string{"node-1/EVENT_KIND_EXEC"}},
		{"since", EventQuery{Since: t0.Add(30 * time.Second)}, []string{"node-1/EVENT_KIND_CONNECT", "node-2/EVENT_KIND_CONNECT"}},
		{"limit", EventQuery{Limit: 1}, []string{"node-1/EVENT_KIND_CONNECT"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := s.Events(context.Background(), tc.q)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range evs {
				got = append(got, e.GetNode()+"/"+e.GetKind().String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestEventSegmentsBoundDisk turns the event ring many times over: whole
// segments are deleted as the ring moves past them, so the events' files
// hold the ring and about one segment more, however much was received.
func TestEventSegmentsBoundDisk(t *testing.T) {
	const (
		maxEvents = 10_000
		segment   = 1 << 20
		perBatch  = 500
		rounds    = 3
		batches   = 60 // per round: 30k events, ~28 MiB
	)
	dir := t.TempDir()
	s := openTestStore(t, BadgerConfig{Dir: dir, MaxEvents: maxEvents, eventSegmentBytes: segment})
	arg := strings.Repeat("x", 900)
	seq := uint64(0)
	var sizes []int64
	for range rounds {
		for range batches {
			recs := make([]*api.Record, perBatch)
			for i := range recs {
				seq++
				e := mkEvent("node-1", api.EventKind_EVENT_KIND_EXEC, t0.Add(time.Duration(seq)*time.Millisecond))
				e.Process.Args = []string{arg}
				recs[i] = eventRec(seq, e)
			}
			mustIngest(t, s, "a", &api.Batch{Records: recs})
		}
		sizes = append(sizes, dirBytes(t, filepath.Join(dir, eventsDirName), segmentSuffix))
	}
	written := int64(seq) * 950
	live := int64(maxEvents) * 950
	t.Logf("written %d MiB, live %.1f MiB; event segments after each round %v MiB", written>>20, float64(live)/(1<<20), mibs(sizes))
	// The ring, the oldest page kept (a batch), a segment being filled and
	// one the ring is moving through.
	limit := live + perBatch*950 + 2*segment
	for i, sz := range sizes {
		if sz > limit {
			t.Errorf("round %d: event segments hold %d bytes, want at most %d", i+1, sz, limit)
		}
	}
	evs, err := s.Events(context.Background(), EventQuery{Limit: MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != MaxLimit || !evs[0].GetTime().AsTime().Equal(t0.Add(time.Duration(seq)*time.Millisecond)) {
		t.Fatalf("%d events, newest at %v; want %d, newest at seq %d", len(evs), evs[0].GetTime().AsTime(), MaxLimit, seq)
	}
	if got := storedEvents(t, s); got < maxEvents || got >= maxEvents+perBatch {
		t.Errorf("%d events stored, want %d to %d", got, maxEvents, maxEvents+perBatch-1)
	}
}

// TestEventLogCutsUnindexedTail: a page written to its segment but never
// indexed (the process died between the two) is cut off at Open, and the
// ring goes on from the last indexed page.
func TestEventLogCutsUnindexedTail(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBadgerStoreConfig(BadgerConfig{Dir: dir, MaxEvents: 100}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint64(3) {
		mustIngest(t, s, "a", &api.Batch{Records: []*api.Record{eventRec(i+1, mkEvent("node-1", api.EventKind_EVENT_KIND_EXEC, t0.Add(time.Duration(i)*time.Second)))}})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	segs, err := listSegments(filepath.Join(dir, eventsDirName))
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments %v, %v; want one", segs, err)
	}
	path := filepath.Join(dir, eventsDirName, segmentName(segs[0]))
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{pageVersion, 5, 'j', 'u', 'n', 'k', '!'}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// A segment of pages that were never indexed at all.
	if err := os.WriteFile(filepath.Join(dir, eventsDirName, segmentName(segs[0]+1000)), []byte("unindexed"), 0o600); err != nil {
		t.Fatal(err)
	}

	s2 := openTestStore(t, BadgerConfig{Dir: dir, MaxEvents: 100})
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if after.Size() != before.Size() {
		t.Errorf("segment is %d bytes after Open, want the indexed %d", after.Size(), before.Size())
	}
	if segs, _ := listSegments(filepath.Join(dir, eventsDirName)); len(segs) != 1 {
		t.Errorf("segments after Open: %v, want the unindexed one removed", segs)
	}
	mustIngest(t, s2, "a", &api.Batch{Records: []*api.Record{eventRec(4, mkEvent("node-1", api.EventKind_EVENT_KIND_EXEC, t0.Add(3*time.Second)))}})
	evs, err := s2.Events(context.Background(), EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 4 || !evs[0].GetTime().AsTime().Equal(t0.Add(3*time.Second)) || !evs[3].GetTime().AsTime().Equal(t0) {
		t.Fatalf("after reopen: %d events (newest %v), want 4 from +0s to +3s", len(evs), evs[0].GetTime().AsTime())
	}
}

// TestOpenRefusesMissingSegment: the index naming a segment that is gone
// is damage Open reports, not an empty ring it silently starts over.
func TestOpenRefusesMissingSegment(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBadgerStoreConfig(BadgerConfig{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustIngest(t, s, "a", &api.Batch{Records: []*api.Record{eventRec(1, mkEvent("node-1", api.EventKind_EVENT_KIND_EXEC, t0))}})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, eventsDirName)); err != nil {
		t.Fatal(err)
	}
	_, err = OpenBadgerStoreConfig(BadgerConfig{Dir: dir}, nil)
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Open with the segment gone: %v, want an error naming the missing segment", err)
	}
}

func mibs(bs []int64) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = fmt.Sprintf("%.1f", float64(b)/(1<<20))
	}
	return out
}

// dirBytes sums the allocated bytes of the files in dir ending in ext.
func dirBytes(t testing.TB, dir, ext string) int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ext) {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		}
	}
	return n
}

// TestReadsEventsOfTheEarlierLayout: a store written with one inline Badger
// value per event is read after the upgrade, and its events age out of the
// ring like pages.
func TestReadsEventsOfTheEarlierLayout(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBadgerStoreConfig(BadgerConfig{Dir: dir, MaxEvents: 4}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = s.db.Update(func(txn *badger.Txn) error {
		for pos := range uint64(3) {
			e := mkEvent("node-old", api.EventKind_EVENT_KIND_EXEC, t0.Add(time.Duration(pos)*time.Second))
			body, err := proto.Marshal(e)
			if err != nil {
				return err
			}
			if err := txn.Set(eventKey(pos), append(eventHeader(nil, e), body...)); err != nil {
				return err
			}
		}
		return txn.Set(key(keyRingState), binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, 0), 3))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openTestStore(t, BadgerConfig{Dir: dir, MaxEvents: 4})
	evs, err := s2.Events(context.Background(), EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 || evs[0].GetNode() != "node-old" || !evs[0].GetTime().AsTime().Equal(t0.Add(2*time.Second)) {
		t.Fatalf("earlier layout: %d events (%v), want the 3 stored, newest first", len(evs), evs)
	}
	mustIngest(t, s2, "a", &api.Batch{Records: []*api.Record{
		eventRec(1, mkEvent("node-new", api.EventKind_EVENT_KIND_EXEC, t0.Add(10*time.Second))),
		eventRec(2, mkEvent("node-new", api.EventKind_EVENT_KIND_EXEC, t0.Add(11*time.Second))),
	}})
	evs, err = s2.Events(context.Background(), EventQuery{})
	if err != nil {
		t.Fatal(err)
	}
	var nodes []string
	for _, e := range evs {
		nodes = append(nodes, e.GetNode())
	}
	if want := []string{"node-new", "node-new", "node-old", "node-old"}; !slices.Equal(nodes, want) {
		t.Errorf("after a new page: %v, want %v", nodes, want)
	}
	if got := countKeys(t, s2, prefixEvent); got != 3 {
		t.Errorf("%d event keys, want 3 (the oldest inline event dropped, 2 kept, 1 page)", got)
	}
}
